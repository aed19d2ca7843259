"""Steps/s of a distillation step against a plain fine-tuning step of the same student.

T5-small shape with random weights (d_model 512, 8 heads, d_ff 2048, 6 encoder layers, vocab
32128): a 6-decoder-layer teacher and a student keeping teacher decoder layers [0, 2, 5]. Both
step kinds run through the real engine (`nash_cli.train.engine.train`), alternating, on the same
fixed batch shape; each step's time comes from the
per-step log (the first step of each run, which allocates, is dropped); medians are reported.

    python scripts/bench_distill_step.py --threads 2 --steps 8 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=128)
    parser.add_argument("--target-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating (plain, distill) pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_cli.data import Features
    from nash_cli.train.engine import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    config = T5Config(
        vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
        dropout_rate=0.1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(config).eval()
    student_config = copy.deepcopy(config)
    student_config.num_decoder_layers = 3
    student_template = T5ForConditionalGeneration(student_config)
    keep = [0, 2, 5]
    state = teacher.state_dict()
    student_state = {}
    for name in student_template.state_dict():
        source = name
        if name.startswith("decoder.block."):
            index = int(name.split(".")[2])
            source = name.replace(f"decoder.block.{index}.", f"decoder.block.{keep[index]}.", 1)
        student_state[name] = state[source].clone()
    student_template.load_state_dict(student_state)

    generator = torch.Generator().manual_seed(1)
    n = args.batch_size * (args.steps + 1)
    features = [
        Features(
            input_ids=torch.randint(2, 32000, (args.source_length,), generator=generator).tolist(),
            labels=torch.randint(2, 32000, (args.target_length,), generator=generator).tolist(),
        )
        for _ in range(n)
    ]

    def run(kind: str) -> list[float]:
        student = copy.deepcopy(student_template)
        with tempfile.TemporaryDirectory() as directory:
            result = train(
                TrainConfig(
                    output=Path(directory) / "out", max_steps=args.steps, batch_size=args.batch_size,
                    save_every=0, log_every=1, show_progress=False,
                ),
                student,
                features,
                pad_token_id=0,
                teacher=teacher if kind == "distill" else None,
                encoder_layer_map=list(range(6)) if kind == "distill" else None,
                decoder_layer_map=keep if kind == "distill" else None,
            )  # fmt: skip
            log = (result.partial / "train_log.jsonl").read_text().splitlines()
        # Seconds of each step after the first (the first one allocates), from the per-step log.
        return [1 / json.loads(line)["steps_per_s"] for line in log[1:]]

    seconds: dict[str, list[float]] = {"plain": [], "distill": []}
    for round_ in range(args.rounds):
        for kind in ("plain", "distill") if round_ % 2 == 0 else ("distill", "plain"):
            times = run(kind)
            seconds[kind].extend(times)
            print(f"round {round_} {kind:8s} " + " ".join(f"{t:.3f}" for t in times) + " s/step", flush=True)
    plain, distill = 1 / statistics.median(seconds["plain"]), 1 / statistics.median(seconds["distill"])
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, source {args.source_length}, target {args.target_length}")
    print(f"plain   median {plain:.3f} steps/s ({1 / plain:.3f} s/step)")
    print(f"distill median {distill:.3f} steps/s ({1 / distill:.3f} s/step)")
    print(f"distill step / plain step = {plain / distill:.2f}x")


if __name__ == "__main__":
    main()
