"""Steps/s of a distillation step against a plain fine-tuning step of the same student.

T5-small shape with random weights (d_model 512, 8 heads, d_ff 2048, 6 encoder layers, vocab
32128): a 6-decoder-layer teacher and a student keeping teacher decoder layers [0, 2, 5]. Two
loop `Trainer`s (plain fine-tuning; distillation with CE + KL + encoder and decoder MSE) take
optimiser steps alternately, one step each in turn, on batches of the same fixed shape, after one
warm-up step each. Reported: median wall-clock and CPU (process) time per step. CPU time is the
robust figure on a shared machine: other jobs stretch wall time, not the CPU time a step needs.

    python scripts/bench_distill_step.py --threads 1 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=128)
    parser.add_argument("--target-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="measured steps of each kind")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_cli.data import Features
    from nash_cli.train.config import TrainConfig
    from nash_cli.train.loop import Trainer

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

    directory = tempfile.TemporaryDirectory()
    trainers = {}
    for kind in ("plain", "distill"):
        trainer = Trainer(
            TrainConfig(
                output=Path(directory.name) / kind, max_steps=args.steps + 1, batch_size=args.batch_size,
                save_every=0, show_progress=False,
            ),
            copy.deepcopy(student_template),
            features,
            pad_token_id=0,
            teacher=teacher if kind == "distill" else None,
            encoder_layer_map=list(range(6)) if kind == "distill" else None,
            decoder_layer_map=keep if kind == "distill" else None,
        )  # fmt: skip
        trainer.setup(trainer._prepare_directory())
        trainer.train_step()  # warm-up: allocations, first-call kernel set-up
        trainers[kind] = trainer

    wall: dict[str, list[float]] = {"plain": [], "distill": []}
    cpu: dict[str, list[float]] = {"plain": [], "distill": []}
    for step in range(args.steps):
        for kind in ("plain", "distill") if step % 2 == 0 else ("distill", "plain"):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            trainers[kind].train_step()
            wall[kind].append(time.perf_counter() - start_wall)
            cpu[kind].append(time.process_time() - start_cpu)
            print(f"step {step} {kind:8s} wall {wall[kind][-1]:.3f} s  cpu {cpu[kind][-1]:.3f} s", flush=True)
    directory.cleanup()

    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, source {args.source_length}, target {args.target_length}")
    for name, table in (("wall", wall), ("cpu", cpu)):
        plain, distill = statistics.median(table["plain"]), statistics.median(table["distill"])
        print(f"{name:4s}: plain {plain:.3f} s/step ({1 / plain:.3f} steps/s), distill {distill:.3f} s/step "
              f"({1 / distill:.3f} steps/s), ratio {distill / plain:.2f}x")


if __name__ == "__main__":
    main()
