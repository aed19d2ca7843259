"""The whole chain, transformers and CTranslate2, at T5-base shape: what docs/export.md reports.

    python scripts/bench_export.py build --work /tmp/nash-export    # teacher, student, 4 exports
    nash bench ...                                                   # the command `build` prints
    python scripts/bench_export.py bare --work /tmp/nash-export      # bare translate_batch loop
    python scripts/bench_export.py alternate --work /tmp/nash-export # nash's timing vs bare, alternated

`build` makes a T5-base-shaped teacher with random weights (T5 v1.0: d_model 768, 12 heads,
d_ff 3072, 12 + 12 layers, vocabulary 32128) and a tool-made student with nash's own commands:
`select-layers -k 3`, a short `prune-encoder` run to encoder sparsity 0.3 (on the demo's
generated match reports), `compact`. It exports both with `nash export` at float32 and int8 and
prints the one `nash bench` command that times all six interleaved.

`bare` times the same CTranslate2 directories with nothing but `ctranslate2.Translator.
translate_batch` on the inputs `nash bench` builds (the same random tokens, seed 0), with the
same beams, fixed length and threads: the reference that `nash bench`'s CTranslate2 timings
are compared with. Each model: one untimed call, then --repeats timed calls, models in turn.

`alternate` does the comparison within one process: per model, --rounds pairs of calls on the
same Translator, a bare `translate_batch` and nash's `run_bench` (the timing `nash bench` uses),
in alternating order, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
            relative_attention_num_buckets=32, relative_attention_max_distance=128)
EXPORTS = ("teacher-ct2-float32", "teacher-ct2-int8", "student-ct2-float32", "student-ct2-int8")


def nash(*args: str) -> None:
    command = [sys.executable, "-m", "nash_cli", *map(str, args)]
    print("$", shlex.join(["nash", *map(str, args)]), flush=True)
    subprocess.run(command, check=True)


def build(args) -> None:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from nash_cli.demo.task import make_task
    from nash_cli.toy import train_word_tokenizer

    work = Path(args.work)
    train, _ = make_task(train_size=512, eval_size=1, seed=0)
    data = work / "train.jsonl"
    work.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(row) + "\n" for row in train))
    teacher = work / "teacher"
    if not teacher.exists():
        config = T5Config(feed_forward_proj="relu", dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
                          eos_token_id=1, **BASE)
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(config).eval()
        model.save_pretrained(teacher)
        train_word_tokenizer([row["report"] + " " + row["summary"] for row in train], vocab_size=512).save_pretrained(teacher)
    if not (work / "student").exists():
        nash("select-layers", teacher, "-o", work / "s-layers", "-k", "3", "--force")
        nash("prune-encoder", work / "s-layers", "--teacher", teacher, "--data", data, "-o", work / "s-pruned",
             "--source-column", "report", "--target-column", "summary", "--target-sparsity", "0.3",
             "--max-steps", str(args.prune_steps), "--sparsity-warmup", str(args.prune_steps // 2),
             "--reg-lr", "0.1", "--batch-size", "4", "--max-source-length", "64", "--max-target-length", "24",
             "--save-every", "0", "--force")
        nash("compact", work / "s-pruned", "-o", work / "student", "--force")
    for name in EXPORTS:
        source, _, quantization = name.split("-")
        if not (work / name).exists():
            nash("export", work / source, "-o", work / name, "--quantization", quantization, "--device", "cpu")
    models = ["teacher", *EXPORTS[:2], "student", *EXPORTS[2:]]
    print("\nnow run (from", work, "):\n")
    print(shlex.join(["nash", "bench", *models, "--baseline", "teacher", "--batch", "8", "--beams", "4",
                      "--source-length", "256", "--fixed-length", "64", "--threads", "2", "--repeats", "3",
                      "-o", "bench.json", "--force"]))


def bare(args) -> None:
    import ctranslate2

    from nash_cli.batches import random_batches

    work = Path(args.work)
    translators = {name: ctranslate2.Translator(str(work / name), device="cpu", compute_type="default",
                                                 inter_threads=1, intra_threads=args.threads) for name in args.models}
    vocabularies = {name: json.loads((work / name / "shared_vocabulary.json").read_text()) for name in args.models}
    # The inputs nash bench builds for a T5 (pad 0, eos 1, decoder start 0): ids 4..vocab-1, eos last, seed 0.
    (batch,) = random_batches(vocab_size=min(len(v) for v in vocabularies.values()), batch_size=args.batch,
                              source_length=args.source_length, low=4, eos_token_id=1, seed=0)
    options = dict(beam_size=args.beams, max_decoding_length=args.fixed_length, min_decoding_length=args.fixed_length,
                   max_input_length=0, return_end_token=True)
    sources = {name: [[vocab[i] for i in row] for row in batch.input_ids.tolist()] for name, vocab in vocabularies.items()}
    times: dict[str, list[float]] = {name: [] for name in args.models}
    for name, translator in translators.items():
        translator.translate_batch(sources[name], **options)  # warm-up
    for _ in range(args.repeats):
        for name, translator in translators.items():
            start = time.perf_counter()
            translator.translate_batch(sources[name], **options)
            times[name].append(time.perf_counter() - start)
    report = {name: {"median_s": statistics.median(values), "runs_s": values} for name, values in times.items()}
    print(json.dumps(report, indent=2))
    if args.compare:
        bench = json.loads(Path(args.compare).read_text())
        print(f"\n{'model':<22} {'nash bench s':>12} {'bare s':>8} {'bench/bare':>10}")
        for entry in bench["models"]:
            name = Path(entry["name"]).name
            if name in report:
                ours = entry["latency_s"]["median"]
                print(f"{name:<22} {ours:>12.3f} {report[name]['median_s']:>8.3f} {ours / report[name]['median_s']:>10.3f}")


def alternate(args) -> None:
    """nash's timing of a CTranslate2 model against a bare `translate_batch` on the same Translator,
    alternated call by call in one process, so the machine's drift hits both alike."""
    import ctranslate2  # noqa: F401  (fail early without the extra)
    import torch

    from nash_cli.batches import random_batches
    from nash_cli.export.runtime import CTranslate2Model
    from nash_cli.generation import resolve_settings
    from nash_cli.timing import BenchSettings, run_bench

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    summary = {}
    for name in args.models:
        model = CTranslate2Model(work / name, device="cpu", threads=args.threads)
        (batch,) = random_batches(vocab_size=model.config.vocab_size, batch_size=args.batch,
                                  source_length=args.source_length, low=4, eos_token_id=1, seed=0)
        settings = resolve_settings(model, num_beams=args.beams, fixed_length=args.fixed_length)
        source = [[model.tokens[i] for i in row] for row in batch.input_ids.tolist()]
        options = dict(beam_size=args.beams, max_decoding_length=args.fixed_length,
                       min_decoding_length=args.fixed_length, max_input_length=0)
        model.translator.translate_batch(source, **options)  # warm-up
        bare, ours = [], []
        for round_ in range(args.rounds):
            for which in (("bare", "nash") if round_ % 2 == 0 else ("nash", "bare")):
                if which == "bare":
                    start = time.perf_counter()
                    model.translator.translate_batch(source, **options)
                    bare.append(time.perf_counter() - start)
                else:
                    result = run_bench({name: model}, [batch], {name: settings}, BenchSettings(repeats=1, warmup=0))
                    ours.append(result.models[0].repeat_s[0])
        ratios = [o / b for o, b in zip(ours, bare)]
        summary[name] = {"bare_s": bare, "nash_s": ours, "median_bare_s": statistics.median(bare),
                         "median_nash_s": statistics.median(ours),
                         "ratio_of_medians": statistics.median(ours) / statistics.median(bare),
                         "median_ratio": statistics.median(ratios)}
        print(f"{name:<22} bare {statistics.median(bare):7.3f} s  nash {statistics.median(ours):7.3f} s  "
              f"nash/bare {summary[name]['ratio_of_medians']:.3f} (paired median {summary[name]['median_ratio']:.3f})",
              flush=True)
        del model
    print(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("build")
    one.add_argument("--work", required=True)
    one.add_argument("--prune-steps", type=int, default=20)
    for name in ("bare", "alternate"):
        sub = commands.add_parser(name)
        sub.add_argument("--work", required=True)
        sub.add_argument("--models", nargs="+", default=list(EXPORTS))
        sub.add_argument("--batch", type=int, default=8)
        sub.add_argument("--beams", type=int, default=4)
        sub.add_argument("--source-length", type=int, default=256)
        sub.add_argument("--fixed-length", type=int, default=64)
        sub.add_argument("--threads", type=int, default=2)
        if name == "bare":
            sub.add_argument("--repeats", type=int, default=3)
            sub.add_argument("--compare", help="a bench.json to compare with")
        else:
            sub.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    {"build": build, "bare": bare, "alternate": alternate}[args.command](args)


if __name__ == "__main__":
    main()
