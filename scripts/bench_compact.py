"""How long compacting takes, and whether a compact model runs as fast as stock transformers.

    python scripts/bench_compact.py --shape base --work /tmp/nash-bench            # compaction time
    python scripts/bench_compact.py --shape small --work /tmp/nash-bench --reps 30  # + speed check

Builds a random T5 of the given shape (small: d_model 512, 8 heads, d_ff 2048, 6 + 6 layers;
base: 768, 12, 3072, 12 + 12), writes it as a `masked` checkpoint whose masks keep the same
heads (--keep-heads of H, the same head set in every layer) and the same number of FFN units
(--keep-units, a different random set per layer) in every layer, and times `nash compact` on it.

With --reps, it then compares generation (batch 32, beam 4, a fixed number of new tokens) of
the compact model (nash's modeling file) with a model made only of stock transformers T5
classes at the same widths: stock T5ForConditionalGeneration whose encoder is a stock T5Stack
built from a T5Config with num_heads=kept heads and d_ff=kept units (stock T5Config has one
width for both stacks), holding the same weights. Both produce identical tokens. Runs are
interleaved A/B pairs (order alternating) on one thread; it reports CPU time of this process
(robust on a busy machine) and wall time, as ratios compact / stock.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

SHAPES = {
    "small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8),
    "base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12),
}


def build(args):
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_cli import artifact
    from nash_cli.masking import encoder_shape, write_mask_file
    from nash_cli.toy import train_word_tokenizer

    config = T5Config(
        vocab_size=32128, feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0, **SHAPES[args.shape]
    )
    torch.manual_seed(0)
    dense = T5ForConditionalGeneration(config).eval()
    shape = encoder_shape(dense)
    heads = torch.zeros(shape.num_layers, shape.num_heads)
    heads[:, args.keep_heads] = 1
    ffn = torch.zeros(shape.num_layers, shape.d_ff)
    generator = torch.Generator().manual_seed(0)
    for layer in range(shape.num_layers):
        ffn[layer, torch.randperm(shape.d_ff, generator=generator)[: args.keep_units]] = 1
    work = Path(args.work) / args.shape
    dense.save_pretrained(work / "dense")
    train_word_tokenizer(["a tiny corpus"], vocab_size=16).save_pretrained(work / "dense")

    def masks(directory: Path) -> None:
        write_mask_file(
            directory / "masks.safetensors", heads_log_alpha=heads, ffn_log_alpha=ffn, heads_mask=heads, ffn_mask=ffn
        )

    artifact.save_checkpoint(
        dense, work / "masked", source=work / "dense", stage="prune-encoder", arguments={}, state="masked",
        extra_files={"masks.safetensors": masks}, force=True,
    )  # fmt: skip
    return config, work


def time_compact(work: Path) -> dict:
    from nash_cli.stages.compact import CompactOptions, run

    started = time.perf_counter()
    result = run(CompactOptions(checkpoint=str(work / "masked"), output=work / "compact", force=True))
    return {
        "compact_wall_s": round(time.perf_counter() - started, 2),
        "parameters": result.parameters,
        "weights_bytes": result.file_size,
    }


def stock_reference(config, compact, keep_heads, keep_units):
    from transformers import T5ForConditionalGeneration
    from transformers.models.t5.modeling_t5 import T5Stack

    encoder_config = copy.deepcopy(config)
    encoder_config.num_heads, encoder_config.d_ff = len(keep_heads), keep_units
    encoder_config.is_decoder, encoder_config.use_cache = False, False
    stock = T5ForConditionalGeneration(config).eval()
    stock.encoder = T5Stack(encoder_config)
    state = dict(compact.state_dict())
    key = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    state[key] = state[key][:, keep_heads]  # the stock table has only the kept heads' columns
    missing, unexpected = stock.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    stock.encoder.embed_tokens = stock.shared
    return stock.eval()


def compare(compact, stock, *, reps: int, source_length: int, new_tokens: int) -> dict:
    ids = torch.randint(4, 32128, (32, source_length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)

    def generate(model):
        with torch.no_grad():
            return model.generate(
                input_ids=ids, attention_mask=mask, num_beams=4, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False,
            )  # fmt: skip

    def encode(model):
        with torch.no_grad():
            return model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state

    report = {}
    for name, run in (("encoder_forward", encode), ("generate", generate)):
        run(compact), run(stock)  # warm-up
        cpu = {"compact": [], "stock": []}
        wall = {"compact": [], "stock": []}
        for rep in range(reps):
            order = [("compact", compact), ("stock", stock)][:: 1 if rep % 2 == 0 else -1]
            outputs = []
            for label, model in order:
                w, c = time.perf_counter(), time.process_time()
                outputs.append(run(model))
                cpu[label].append(time.process_time() - c)
                wall[label].append(time.perf_counter() - w)
            assert torch.equal(outputs[0], outputs[1]), "compact and stock disagree"
        report[name] = {
            "cpu_median_s": {k: round(statistics.median(v), 4) for k, v in cpu.items()},
            "cpu_ratio_of_medians": statistics.median(cpu["compact"]) / statistics.median(cpu["stock"]),
            "cpu_median_of_pair_ratios": statistics.median(a / b for a, b in zip(cpu["compact"], cpu["stock"])),
            "wall_ratio_of_medians": statistics.median(wall["compact"]) / statistics.median(wall["stock"]),
            "reps": reps,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="small")
    parser.add_argument("--work", required=True, help="Scratch directory for the checkpoints.")
    parser.add_argument("--keep-heads", default=None, help="Kept head indices, e.g. 0,1,2,4,5,7 (default: 3/4 of them).")
    parser.add_argument("--keep-units", type=int, default=None, help="Kept FFN units per layer (default: 70%%).")
    parser.add_argument("--reps", type=int, default=0, help="A/B generation pairs to time (0: only time compact).")
    parser.add_argument("--source-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args()
    heads = SHAPES[args.shape]["num_heads"]
    args.keep_heads = (
        [int(h) for h in args.keep_heads.split(",")] if args.keep_heads else [h for h in range(heads) if h % 4 != 3]
    )
    args.keep_units = args.keep_units or int(0.7 * SHAPES[args.shape]["d_ff"])

    config, work = build(args)
    result = {"shape": args.shape, "keep_heads": args.keep_heads, "keep_units": args.keep_units, **time_compact(work)}
    print(json.dumps(result), flush=True)
    if args.reps:
        from nash_cli import artifact

        torch.set_num_threads(1)
        compact = artifact.load_model(work / "compact")
        stock = stock_reference(config, compact, args.keep_heads, args.keep_units)
        speed = compare(compact, stock, reps=args.reps, source_length=args.source_length, new_tokens=args.new_tokens)
        print(json.dumps(speed, indent=2))


if __name__ == "__main__":
    main()
