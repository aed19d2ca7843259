"""Built-in inputs for recipes: `demo:train` / `demo:eval` data and a `demo:t5` teacher to train.

A recipe may name these instead of files or hub ids; `nash run` writes them into the run's
`00-inputs/` directory, deterministically, before the first stage. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from nash_cli.errors import NashError

PREFIX = "demo:"
TRAIN_SIZE = 4000
EVAL_SIZE = 200
SEED = 0

#: The from-scratch teacher: a T5 v1.0 with 6 decoder layers to select from. The encoder is as
#: deep as the decoder because stock transformers sizes T5's generation cache by the encoder.
TEACHER_SHAPE = {
    "d_model": 128,
    "num_heads": 4,
    "d_ff": 512,
    "encoder_layers": 6,
    "decoder_layers": 6,
    # stock T5's position buckets: telling which team a score sentence is about needs them
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}


def is_builtin(source: str | None) -> bool:
    """True for `demo:...` names."""
    return bool(source) and source.startswith(PREFIX)


def materialize(teacher: str, train: str, eval_: str | None, directory: Path) -> dict[str, str | None]:
    """Writes the built-in inputs a recipe names into `directory`; returns resolved paths.

    Inputs that are not built-in are returned unchanged.
    """
    names = {"teacher": teacher, "train": train, "eval": eval_}
    _check_names(names)
    if not any(is_builtin(v) for v in names.values()):
        return names
    directory.mkdir(parents=True, exist_ok=True)
    from nash_cli.demo.task import make_task

    train_rows, eval_rows = make_task(train_size=TRAIN_SIZE, eval_size=EVAL_SIZE, seed=SEED)
    files = {"demo:train": (directory / "train.jsonl", train_rows), "demo:eval": (directory / "eval.jsonl", eval_rows)}
    for path, rows in files.values():
        if not path.is_file():
            _write_jsonl(path, rows)
    resolved = dict(names)
    for name in ("train", "eval"):
        if names[name] in files:
            resolved[name] = str(files[names[name]][0])
    if teacher == f"{PREFIX}t5":
        resolved["teacher"] = str(_teacher_init(directory / "teacher-init", train_rows))
    return resolved


def _check_names(names: dict[str, str | None]) -> None:
    allowed = {"teacher": (f"{PREFIX}t5",), "train": (f"{PREFIX}train",), "eval": (f"{PREFIX}eval",)}
    for name, value in names.items():
        if is_builtin(value) and value not in allowed[name]:
            raise NashError(f"unknown built-in {name} {value!r}; use {allowed[name][0]}")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from nash_cli.artifact import write_files_atomic

    write_files_atomic({path: "".join(json.dumps(row) + "\n" for row in rows)})


def _teacher_init(path: Path, rows: list[dict]) -> Path:
    """A randomly initialised T5 with a word-level tokenizer trained on the demo data."""
    if (path / "model.safetensors").is_file():
        return path
    from nash_cli._hf import quiet_transformers
    from nash_cli.artifact import staged_output
    from nash_cli.toy import tiny_model, train_word_tokenizer

    tokenizer = train_word_tokenizer((f"{r['report']} {r['summary']}" for r in rows), vocab_size=256)
    model = tiny_model("t5", vocab_size=len(tokenizer), seed=SEED, **TEACHER_SHAPE)
    with staged_output(path, force=True, kind=None) as staging, quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return path


def planned_paths(teacher: str, train: str, eval_: str | None, directory: Path) -> dict[str, str | None]:
    """Where `materialize` would put the built-in inputs, without writing anything."""
    _check_names({"teacher": teacher, "train": train, "eval": eval_})
    places = {"demo:train": directory / "train.jsonl", "demo:eval": directory / "eval.jsonl", "demo:t5": directory / "teacher-init"}
    return {
        name: str(places[value]) if value in places else value
        for name, value in (("teacher", teacher), ("train", train), ("eval", eval_))
    }
