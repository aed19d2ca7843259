"""The encoder CTranslate2 runs narrow, at T5-base shape: what docs/prune-encoder.md reports.

    python scripts/bench_engine_aware.py build --work /tmp/nash-engine   # checkpoints, exports
    nash bench ...                                                        # the command `build` prints

`build` makes a T5-base-shaped teacher with random weights (T5 v1.0: d_model 768, 12 heads,
d_ff 3072, 12 + 12 layers, vocabulary 32128), its 3-decoder-layer student (`nash select-layers
-k 3`: the unpruned encoder), and from that student masked checkpoints at each `--sparsity`, as
`prune-encoder` writes them, with masks chosen from the same log_alphas by
`nash_cli.l0.masks_for_target` under each structure:

- `engine`: `--uniform-heads --ffn-multiple-of 64` (prune-encoder's default);
- `free`: `--no-uniform-heads --ffn-multiple-of 1` (before: the widths the log_alphas give);
- `heads`: uniform heads only; `ffn`: FFN multiples of 64 only (what each half buys).

The log_alphas are not trained (training at this shape takes hours here): they are drawn from
N(0, 1) plus a per-layer offset falling linearly from +2 (layer 0) to -2 (layer 11), so that
later layers are pruned more, as real runs prune them (docs/prune-encoder.md: T5-small at 0.3
kept 8, 8, 7, 4, 2, 2 heads). Each is compacted (`nash compact`) and exported to int8 (`nash
export --quantization int8`); the unpruned student is exported too. `build` prints the one `nash
bench` command that times them all interleaved.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
            relative_attention_num_buckets=32, relative_attention_max_distance=128)
STRUCTURES = {
    "engine": dict(uniform_heads=True, ffn_multiple_of=64),
    "free": dict(uniform_heads=False, ffn_multiple_of=1),
    "heads": dict(uniform_heads=True, ffn_multiple_of=1),
    "ffn": dict(uniform_heads=False, ffn_multiple_of=64),
}


def nash(*args: str) -> None:
    command = [sys.executable, "-m", "nash_cli", *map(str, args)]
    print("$", shlex.join(["nash", *map(str, args)]), flush=True)
    subprocess.run(command, check=True)


def trend_log_alphas(num_layers: int, num_heads: int, d_ff: int, seed: int):
    """Untrained scores with later layers pruned more (see the module docstring)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    offset = torch.linspace(2.0, -2.0, num_layers)[:, None]
    return (torch.randn(num_layers, num_heads, generator=generator) + offset,
            torch.randn(num_layers, d_ff, generator=generator) + offset)


def write_masked(student: Path, output: Path, sparsity: float, structure: dict, seed: int) -> dict:
    """A masked checkpoint of `student` as prune-encoder writes it, masks from the trend scores."""
    from nash_cli import artifact
    from nash_cli.l0 import mask_sparsity, masks_for_target
    from nash_cli.masking import MASKS_FILE, encoder_shape, write_mask_file

    model = artifact.load_model(str(student))
    shape = encoder_shape(model)
    heads_la, ffn_la = trend_log_alphas(shape.num_layers, shape.num_heads, shape.d_ff, seed)
    heads, ffn = masks_for_target(heads_la, ffn_la, shape, sparsity, **structure)

    def masks(directory: Path) -> None:
        write_mask_file(directory / MASKS_FILE, heads_log_alpha=heads_la, ffn_log_alpha=ffn_la, heads_mask=heads,
                        ffn_mask=ffn)

    summary = {"structure": structure, "sparsity": mask_sparsity(heads, ffn, shape),
               "heads_per_layer": [int(n) for n in heads.sum(1)], "ffn_units_per_layer": [int(n) for n in ffn.sum(1)]}
    artifact.save_checkpoint(model, output, source=student, stage="prune-encoder", arguments={"script": "bench_engine_aware"},
                             state="masked", extra={"prune_encoder": summary}, extra_files={MASKS_FILE: masks}, force=True)
    return summary


def build(args) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_cli.toy import train_word_tokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    teacher = work / "teacher"
    if not teacher.exists():
        config = T5Config(feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                          eos_token_id=1, **BASE)
        torch.manual_seed(0)
        T5ForConditionalGeneration(config).eval().save_pretrained(teacher)
        train_word_tokenizer(["a b c d e f g h"], vocab_size=64).save_pretrained(teacher)
    student = work / "s3"
    if not student.exists():
        nash("select-layers", teacher, "-o", student, "-k", "3")
    exports = ["s3-int8"]
    if not (work / "s3-int8").exists():
        nash("export", student, "-o", work / "s3-int8", "--quantization", "int8", "--device", "cpu", "--no-verify")
    summary = work / "masks.json"
    report = json.loads(summary.read_text()) if summary.is_file() else {}
    for sparsity in args.sparsity:
        for name in args.structures:
            label = f"s{round(sparsity * 100)}-{name}"
            if not (work / f"{label}-int8").exists():
                report[label] = write_masked(student, work / f"{label}-masked", sparsity, STRUCTURES[name], args.seed)
                nash("compact", work / f"{label}-masked", "-o", work / label, "--force")
                nash("export", work / label, "-o", work / f"{label}-int8", "--quantization", "int8", "--device", "cpu",
                     "--no-verify", "--force")
            exports.append(f"{label}-int8")
    summary.write_text(json.dumps(report, indent=1))
    print("\nnow run (from", work, "):\n")
    print(shlex.join(["nash", "bench", *exports, "--baseline", "s3-int8", "--batch", "8", "--beams", "4",
                      "--source-length", "512", "--fixed-length", "32", "--threads", "2", "--repeats", "3",
                      "-o", "bench.json", "--force"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="teacher, student, masked/compact students, int8 exports")
    b.add_argument("--work", required=True)
    b.add_argument("--sparsity", type=float, nargs="+", default=[0.5])
    b.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES))
    b.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args)


if __name__ == "__main__":
    main()
