"""Translation models at real shapes: what docs/translation.md reports (issue 24).

    python scripts/bench_translation.py build --shape opus-mt --work /tmp/tb/opus-mt   # models, exports
    python scripts/bench_translation.py build --shape nllb --work /tmp/tb/nllb
    nash bench ...                                                                     # the command `build` prints
    python scripts/bench_translation.py summarize --work /tmp/tb/opus-mt               # ratios, memory, sizes

`build --ladder` also exports the teacher, the student and the compact student to int8 and prints
a second bench command that times each step on CTranslate2 (where the time goes).

Random weights (`torch.manual_seed(0)`) from a transformers config at the real shape; no hub access.

- `opus-mt`: a Marian model as OPUS-MT's (d_model 512, 6 + 6 layers, 8 heads, FFN 2,048, 58,101
  tokens, `scale_embedding`, `final_logits_bias`, `</s>` 0, `<unk>` 1, pad = decoder start = the
  last id 58,100). Built: the teacher and its int8 export; the 2-decoder-layer student (`nash
  select-layers -k 2`), masked at 30% encoder sparsity, compacted (`nash compact`) and exported to
  int8 with a vocabulary map (`nash export --vocab-map train.jsonl`) from targets that draw on
  4,000 distinct words.
- `nllb`: an M2M100 model as NLLB-600M's (d_model 1,024, 12 + 12 layers, 16 heads, FFN 4,096,
  256,206 tokens, `scale_embedding`, LayerDrop 0, `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3). Built:
  the 3-decoder-layer student, masked at 30%, compacted, exported to int8 with the full vocabulary,
  and cut to 32,000 tokens (`nash prune-vocab --multiple-of 64`: the data's sources and targets use
  the 31,996 words with ids 4 to 31,999, so the kept ids are 0 to 31,999, renumbered onto
  themselves) and exported to int8 again.

The tokenizer is a WordLevel `tokenizers` model with exactly the model's vocabulary (`w<id>` for
every id that is not a special token), saved as a fast tokenizer: the real SentencePiece
vocabularies are not available offline, and with random inputs and `--fixed-length` only the
vocabulary's size matters to the timing.

The encoder masks come from untrained log_alphas, as `nash prune-encoder` writes them
(`nash_cli.l0.masks_for_target` with `uniform_heads=False, ffn_multiple_of=1`: per-layer head and
FFN-unit counts from the scores, no structure imposed): N(0, 1) plus a per-layer offset falling
linearly from +2 (first layer) to -2 (last), so that later layers are pruned more, as real runs
prune them.
Everything heavy runs in the `nash` CLI; run the build with OMP_NUM_THREADS=1 on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

SHAPES = {
    "opus-mt": dict(
        model_type="marian", vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        student_layers=2, target_words=4000,
    ),
    "nllb": dict(
        model_type="m2m_100", vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12,
        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
        student_layers=3, target_words=31996,
    ),
}
SPARSITY = 0.3
BENCH = ["--batch", "8", "--beams", "4", "--source-length", "64", "--fixed-length", "64", "--threads", "2"]


def nash(*args: object) -> None:
    command = [sys.executable, "-m", "nash_cli", *map(str, args)]
    print("$", shlex.join(["nash", *map(str, args)]), flush=True)
    subprocess.run(command, check=True)


def specials(shape: str, vocab_size: int) -> dict[int, str]:
    """Special tokens at the real checkpoints' ids."""
    if shape == "opus-mt":
        return {0: "</s>", 1: "<unk>", vocab_size - 1: "<pad>"}
    return {0: "<s>", 1: "<pad>", 2: "</s>", 3: "<unk>"}


def word(i: int) -> str:
    return f"w{i}"


def make_tokenizer(shape: str, vocab_size: int):
    """A WordLevel fast tokenizer with exactly `vocab_size` tokens, specials at the real ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = specials(shape, vocab_size)
    vocab = {special.get(i, word(i)): i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = vocab["</s>"]
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    extra = {"bos_token": "<s>"} if "<s>" in vocab else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=1024, clean_up_tokenization_spaces=False, **extra)
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def make_teacher(shape: str, path: Path) -> None:
    import torch
    from transformers import AutoModelForSeq2SeqLM, M2M100Config, MarianConfig

    spec = SHAPES[shape]
    common = {k: spec[k] for k in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                                   "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim")}
    common.update(scale_embedding=True, max_position_embeddings=1024, dropout=0.1, attention_dropout=0.0,
                  activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0, num_beams=4, max_length=256)
    if shape == "opus-mt":
        pad = spec["vocab_size"] - 1
        config = MarianConfig(activation_function="swish", pad_token_id=pad, decoder_start_token_id=pad,
                              eos_token_id=0, forced_eos_token_id=0, share_encoder_decoder_embeddings=True,
                              bad_words_ids=[[pad]], **common)
    else:
        config = M2M100Config(activation_function="relu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              decoder_start_token_id=2, **common)
    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    if shape == "opus-mt":
        with torch.no_grad():  # a trained OPUS-MT's pad row is zero (padding_idx); keep it so
            model.get_input_embeddings().weight[pad].zero_()
            model.final_logits_bias.normal_(0.0, 0.1)
    model.save_pretrained(path)
    make_tokenizer(shape, spec["vocab_size"]).save_pretrained(path)


def write_data(shape: str, path: Path, *, seed: int = 0) -> dict:
    """Training data whose targets use `target_words` distinct words (see the module docstring)."""
    spec = SHAPES[shape]
    rng = random.Random(seed)
    special = specials(shape, spec["vocab_size"])
    if shape == "opus-mt":  # a domain's target vocabulary: 4,000 words spread over the vocabulary
        candidates = [i for i in range(spec["vocab_size"]) if i not in special]
        words = rng.sample(candidates, spec["target_words"])
        sources = candidates  # any word (the map adds each batch's inputs, not the training sources)
    else:  # ids 4 .. 31,999: with the 4 specials exactly 32,000 tokens, kept by prune-vocab (sources too)
        words = list(range(4, 4 + spec["target_words"]))
        sources = words
    order = words[:]
    rng.shuffle(order)
    length = 24
    examples = []
    # every word at least once, in targets; then Zipf-like draws so frequent words repeat
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    while order or len(examples) < 2000:
        target = [order.pop() for _ in range(min(length, len(order)))]
        target += rng.choices(words, weights=weights, k=length - len(target))
        source = rng.choices(sources, k=length)
        examples.append({"source": " ".join(map(word, source)), "target": " ".join(map(word, target))})
    with path.open("w") as f:
        for example in examples:
            f.write(json.dumps(example) + "\n")
    distinct = {w for e in examples for w in e["target"].split()}
    return {"examples": len(examples), "distinct_target_words": len(distinct),
            "distinct_source_words": len({w for e in examples for w in e["source"].split()})}


def trend_log_alphas(num_layers: int, num_heads: int, d_ff: int, seed: int):
    """Untrained scores with later layers pruned more (see the module docstring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    offset = torch.linspace(2.0, -2.0, num_layers)[:, None]
    return (torch.randn(num_layers, num_heads, generator=generator) + offset,
            torch.randn(num_layers, d_ff, generator=generator) + offset)


def write_masked(student: Path, output: Path, sparsity: float, seed: int) -> dict:
    """A masked checkpoint of `student` as prune-encoder writes it, masks from the trend scores."""
    from nash_cli import artifact
    from nash_cli.l0 import mask_sparsity, masks_for_target
    from nash_cli.masking import MASKS_FILE, encoder_shape, write_mask_file

    model = artifact.load_model(str(student))
    shape = encoder_shape(model)
    heads_la, ffn_la = trend_log_alphas(shape.num_layers, shape.num_heads, shape.d_ff, seed)
    # no structure (main's defaults; prune-encoder's CLI defaults to --uniform-heads --ffn-multiple-of 64)
    heads, ffn = masks_for_target(heads_la, ffn_la, shape, sparsity, uniform_heads=False, ffn_multiple_of=1)

    def masks(directory: Path) -> None:
        write_mask_file(directory / MASKS_FILE, heads_log_alpha=heads_la, ffn_log_alpha=ffn_la, heads_mask=heads,
                        ffn_mask=ffn)

    summary = {"target": sparsity, "sparsity": mask_sparsity(heads, ffn, shape),
               "heads_per_layer": [int(n) for n in heads.sum(1)], "ffn_units_per_layer": [int(n) for n in ffn.sum(1)]}
    artifact.save_checkpoint(model, output, source=student, stage="prune-encoder", arguments={"script": "bench_translation"},
                             state="masked", extra={"prune_encoder": summary}, extra_files={MASKS_FILE: masks}, force=True)
    return summary


def export(checkpoint: Path, output: Path, *extra: object) -> None:
    if not output.exists():
        nash("export", checkpoint, "-o", output, "--quantization", "int8", "--device", "cpu", *extra)


def build(args) -> None:
    shape = args.shape
    spec = SHAPES[shape]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report_path = work / "build.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    teacher, data = work / "teacher", work / "train.jsonl"
    if not teacher.exists():
        make_teacher(shape, teacher)
    if not data.exists():
        report["data"] = write_data(shape, data)
    k = spec["student_layers"]
    student = work / f"s{k}"
    if not student.exists():
        nash("select-layers", teacher, "-o", student, "-k", k)
    compact = work / f"s{k}-sp30"
    if not compact.exists():
        report["masks"] = write_masked(student, work / f"s{k}-sp30-masked", SPARSITY, args.seed)
        nash("compact", work / f"s{k}-sp30-masked", "-o", compact, "--force")
    verify = [] if args.verify else ["--no-verify"]
    if shape == "opus-mt":
        export(teacher, work / "teacher-int8", *verify)
        export(compact, work / f"s{k}-sp30-int8-vmap", "--vocab-map", data, *verify)
        models = ["teacher", "teacher-int8", f"s{k}-sp30-int8-vmap"]
    else:
        pruned = work / f"s{k}-sp30-v32k"
        if not pruned.exists():
            nash("prune-vocab", compact, "--data", data, "-o", pruned, "--multiple-of", "64")
        export(compact, work / f"s{k}-sp30-int8", *verify)
        export(pruned, work / f"s{k}-sp30-v32k-int8", *verify)
        models = ["teacher", f"s{k}-sp30-int8", f"s{k}-sp30-v32k-int8"]
    # where the time goes: every step on CTranslate2 int8, one at a time
    ladder = ["teacher-int8", f"s{k}-int8", f"s{k}-sp30-int8", models[-1]]
    if args.ladder:
        export(teacher, work / "teacher-int8", *verify)
        export(student, work / f"s{k}-int8", *verify)
        export(compact, work / f"s{k}-sp30-int8", *verify)
    report_path.write_text(json.dumps(report, indent=1))
    repeats = str(args.repeats or (10 if shape == "opus-mt" else 3))
    print("\nnow run (from", work, "):\n")
    print(shlex.join(["nash", "bench", *models, "--baseline", "teacher", *BENCH, "--repeats", repeats,
                      "-o", "bench-run1.json", "--force"]))
    if args.ladder:
        print("\nwhere the time goes (each step on CTranslate2 int8):\n")
        print(shlex.join(["nash", "bench", *ladder, "--baseline", "teacher-int8", *BENCH, "--repeats", repeats,
                          "-o", "ladder-run1.json", "--force"]))


def directory_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def pair(report: dict, slow: str, fast: str) -> tuple[float, float]:
    """`slow` / `fast` in one bench report: the ratio of the median repeat times, and the median of the
    per-repeat ratios (each repeat times every model, so a ratio compares runs made seconds apart)."""
    import statistics

    models = {m["name"]: m for m in report["models"]}
    a, b = models[slow]["repeat_s"], models[fast]["repeat_s"]
    return statistics.median(a) / statistics.median(b), statistics.median(x / y for x, y in zip(a, b))


def summarize(args) -> None:
    """Ratios, memory and sizes of the bench reports in --work (bench-run*.json, in name order)."""
    work = Path(args.work)
    reports = sorted(work.glob(args.reports))
    if not reports:
        raise SystemExit(f"no {args.reports} in {work}")
    names = [m["name"] for m in json.loads(reports[0].read_text())["models"]]
    print("| model | on disk (MiB) | " + " | ".join(f"{r.stem}: median call (s), x first model, weights / peak RSS / rise (MiB)"
                                                   for r in reports) + " |")
    print("|---|---:|" + "---|" * len(reports))
    for name in names:
        cells = []
        for r in reports:
            m = {m["name"]: m for m in json.loads(r.read_text())["models"]}[name]
            memory = m.get("peak_memory") or {}
            slow, paired = pair(json.loads(r.read_text()), names[0], name)
            cells.append(f"{m['latency_s']['median']:.3f}, {slow:.2f} (paired {paired:.2f}), "
                         f"{memory.get('weights_mib', 0):.0f} / {memory.get('peak_mib', 0):.0f} / "
                         f"{memory.get('increase_mib', 0):.0f}")
        print(f"| {name} | {directory_mib(work / name):.1f} | " + " | ".join(cells) + " |")
    print()
    for slow, fast in zip(names[1:], names[2:]):
        for r in reports:
            ratio, paired = pair(json.loads(r.read_text()), slow, fast)
            print(f"{r.stem}: {fast} vs {slow}: {ratio:.2f}x (median of per-repeat ratios {paired:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="teacher, student, masked/compact students, int8 exports; prints the bench command")
    b.add_argument("--shape", required=True, choices=list(SHAPES))
    b.add_argument("--work", required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--repeats", type=int, help="--repeats of the printed bench command (default: 10 for opus-mt, "
                   "3 for nllb, whose fp32 teacher takes tens of seconds a call)")
    b.add_argument("--verify", action=argparse.BooleanOptionalAction, default=False,
                   help="let nash export load each export back and compare it with transformers (slow at NLLB shape)")
    b.add_argument("--ladder", action="store_true",
                   help="also export the teacher, the student and the compact student to int8 (no vocabulary "
                   "step) and print the bench command that times each step on CTranslate2")
    s = sub.add_parser("summarize", help="ratios, memory and sizes on disk from the bench reports in --work")
    s.add_argument("--work", required=True)
    s.add_argument("--reports", default="bench-run*.json", help="glob of the bench reports in --work")
    args = parser.parse_args()
    (build if args.command == "build" else summarize)(args)


if __name__ == "__main__":
    main()
