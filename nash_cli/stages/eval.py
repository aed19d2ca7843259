"""`eval`: generate for every example of a data set, score against the references, write both.

A `masked` checkpoint (prune-encoder's output) is evaluated with its deterministic masks
applied, so it scores exactly as its compact form does. A CTranslate2 directory (`nash export`)
is evaluated in CTranslate2 with the same tokenisation, batches and generation settings.

Generation is batched with sources sorted by length (`nash_cli.generation.generate_texts`);
scores come from `nash_cli.metrics`. With several references per example every metric takes
the best reference for that example (BLEU, a corpus metric, uses all references at once).
`--source-lang` / `--target-lang` set a translation tokenizer's languages and force the target's
code as the first generated token (`nash_cli.data.languages`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import Example, ExampleReading, LanguagePair, SourceLength
from nash_cli.errors import NashError, require_at_least, require_finite_options
from nash_cli.metrics import MetricScores, check_metrics
from nash_cli.progress import Progress
from nash_cli.stages import ANY_STATE, Stage, declare
from nash_cli.threads import use_threads

if TYPE_CHECKING:
    from nash_cli.generation import GenerationSettings

#: What `-o DIR/` writes inside DIR: the scores, and the generations beside them.
METRICS_FILE = "metrics.json"
GENERATIONS_FILE = "generations.jsonl"


@dataclass(kw_only=True)
class EvalOptions(ExampleReading, SourceLength, LoadOptions):
    """What `nash eval` does. The data options (`ExampleReading`, `SourceLength`) read `data`."""

    checkpoint: str
    """Checkpoint to evaluate: a local directory (a CTranslate2 export too), or a hub id where online."""
    data: str
    """Evaluation data (any format `distill` reads)."""
    metric: list[str] = field(default_factory=lambda: ["rouge"])
    """rouge, meteor, bleu, chrf, exact_match or accuracy (several allowed)."""
    limit: int | None = None
    """Use only the first N examples."""
    batch: int = 16
    """Examples per generate() call."""
    beams: int | None = None
    """Beam width (default: the checkpoint's generation config)."""
    max_new_tokens: int | None = None
    """Longest output in tokens (default: the checkpoint's generation config)."""
    device: str = "auto"
    """auto (cuda if present), cpu or cuda."""
    dtype: str = "float32"
    """float32, bfloat16 or float16."""
    threads: int | None = None
    """CPU threads for torch and CTranslate2 alike (default: `OMP_NUM_THREADS`, else torch's, one
    per core); on a machine shared with other jobs, 1 per job."""
    output: Path | None = None
    """Write the scores here (e.g. metrics.json) and the outputs beside it; a directory (an
    existing one, or a path ending in "/") gets `metrics.json` and `generations.jsonl` inside."""
    generations: Path | None = None
    """Where to write the outputs instead (JSON Lines); a directory gets `generations.jsonl` inside."""
    force: bool = False
    """Overwrite existing output files."""
    vocab_map: bool = True
    """Decode a CTranslate2 export that has a vocabulary map (`nash export --vocab-map`) with it."""

    def __post_init__(self) -> None:
        self.output = file_in(self.output, METRICS_FILE)
        self.generations = file_in(self.generations, GENERATIONS_FILE)

    def check(self) -> None:
        """NashError for an impossible setting (before any data or model is read)."""
        require_finite_options(self)
        from nash_cli.stages.bench import check_device

        check_metrics(self.metric)
        check_device(self.device, self.dtype)
        for flag, value in (("--batch", self.batch), ("--beams", self.beams), ("--max-new-tokens", self.max_new_tokens),
                            ("--threads", self.threads)):
            require_at_least(flag, value)
        SourceLength.check(self)
        require_at_least("--limit", self.limit)
        ExampleReading.check(self)
        if self.generations is not None and self.output is None:
            raise NashError("--generations goes with --output; give -o metrics.json too")
        if self.output is not None and self.result_paths()[1].resolve() == self.output.resolve():
            raise NashError("--generations and --output name the same file; choose two paths")

    def result_paths(self) -> list[Path]:
        """The files the run writes: metrics, then generations (none without `output`)."""
        if self.output is None:
            return []
        return [self.output, self.generations or generations_path_for(self.output)]


@dataclass
class EvalResult:
    """Predictions and scores for one model on one data set."""

    predictions: list[str]
    """One generated text per example, in input order."""
    metrics: MetricScores
    """Mean scores and per-example values."""
    generation: dict[str, Any]
    """Generation settings used (beams, new tokens, batch size, source length limit)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of generation, scoring and both."""


def evaluate(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    metrics: Sequence[str],
    settings: GenerationSettings,
    batch_size: int,
    max_source_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> EvalResult:
    """Generates a prediction for each example and scores it against the references.

    Args:
        model: A seq2seq model on its device, in eval mode.
        tokenizer: Its tokenizer.
        examples: Sources and references (every example needs at least one reference).
        metrics: Metric names (see `nash_cli.metrics.METRICS`).
        settings: Generation settings (see `nash_cli.generation.resolve_settings`).
        batch_size: Sources per `generate()` call.
        max_source_length: Truncate inputs to this many tokens.
        on_batch: Progress callback, called with the number of examples done per batch.

    Raises:
        NashError: No examples, an example without references, unknown metric, or METEOR
            without WordNet (checked before generating).
    """
    names = check_metrics(metrics)
    if not examples:
        raise NashError("no examples to evaluate: the data is empty")
    for index, example in enumerate(examples):
        if not example.references:
            raise NashError(
                f"example {index + 1} has no reference; point --target-column at the reference text"
            )
    if "meteor" in names:
        from nash_cli.wordnet import load_wordnet

        load_wordnet()  # fail before the long part, not after it
    from nash_cli.generation import generate_texts
    from nash_cli.metrics import compute_metrics

    start = time.perf_counter()
    predictions = generate_texts(
        model,
        tokenizer,
        [example.source for example in examples],
        settings,
        batch_size=batch_size,
        max_source_length=max_source_length,
        on_batch=on_batch,
    )
    generated = time.perf_counter()
    scores = compute_metrics(predictions, [example.references for example in examples], names)
    done = time.perf_counter()
    return EvalResult(
        predictions=predictions,
        metrics=scores,
        generation={**settings.to_dict(), "batch_size": batch_size, "max_source_length": max_source_length},
        seconds={"generation": generated - start, "scoring": done - generated, "total": done - start},
    )


def file_in(path: str | Path | None, name: str) -> Path | None:
    """`path` as the file to write: `path/name` where it names a directory (an existing one, or a
    string ending in a path separator, as `-o results/` does), else `path` itself.

    Written as a file, `-o results/` would become a file named `results`, and an existing
    directory would be refused as an existing output (or, with --force, fail to be replaced).
    """
    if path is None:
        return None
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return Path(text) / name
    return Path(text)


def generations_path_for(metrics_path: Path) -> Path:
    """Where generations go beside a metrics file: `generations.jsonl` for `metrics.json`,
    else `<stem>.generations.jsonl`."""
    if metrics_path.stem == "metrics":
        return metrics_path.with_name(GENERATIONS_FILE)
    return metrics_path.with_name(f"{metrics_path.stem}.generations.jsonl")


def metrics_document(result: EvalResult, examples: Sequence[Example], *, metrics: Sequence[str], **context) -> dict[str, Any]:
    """The metrics.json document: scores, counts, settings, timing, plus `context` (model, data)."""
    return {
        **context,
        "num_examples": len(examples),
        "metrics": list(check_metrics(metrics)),
        "scores": result.metrics.scores,
        **({"signatures": result.metrics.signatures} if result.metrics.signatures else {}),
        "multi_reference": "best reference per example (corpus-level BLEU: all references; chrF: the best per sentence)",
        "references_per_example": {
            "min": min(len(example.references) for example in examples),
            "max": max(len(example.references) for example in examples),
        },
        "generation": result.generation,
        "seconds": result.seconds,
        "examples_per_s": len(examples) / result.seconds["generation"] if result.seconds.get("generation") else None,
    }


def generation_records(result: EvalResult, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """One record per example: source, references, prediction and its per-example scores."""
    records = []
    for index, (example, prediction) in enumerate(zip(examples, result.predictions)):
        scores = {name: values[index] for name, values in result.metrics.per_example.items()}
        records.append(
            {
                "index": index,
                "source": example.source,
                "references": list(example.references),
                "prediction": prediction,
                "scores": scores,
            }
        )
    return records


def write_results(document: dict[str, Any], records: list[dict[str, Any]], metrics_path: Path, generations_path: Path) -> None:
    """Writes metrics.json and generations.jsonl as one set (see `artifact.write_files_atomic`):
    a run killed between the two renames is finished by the next eval into the same output."""
    from nash_cli.artifact import json_text, jsonl_text, write_files_atomic

    write_files_atomic({metrics_path: json_text(document), generations_path: jsonl_text(records)})


@dataclass
class EvalReport:
    """What `run` did, for printing and JSON."""

    document: dict[str, Any]
    """The metrics document: what metrics.json holds, plus `files` (the written paths) and `notes`."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result: the metrics document."""
        return self.document


@releases_outputs
def run(options: EvalOptions, *, progress: Progress | None = None) -> EvalReport:
    """Reads the data, loads the model, generates, scores and writes the results.

    Args:
        options: The stage's options.
        progress: Told the number of examples, then advanced after each generated batch.

    Returns:
        The report; its `document` is what metrics.json holds, plus `files` and `notes`.

    Raises:
        NashError: bad options or data, an existing output without `force`, METEOR without WordNet.
    """
    from nash_cli import artifact
    from nash_cli.data import read_examples, set_languages
    from nash_cli.generation import as_engine, resolve_settings
    from nash_cli.stages.bench import is_exported, load_for_generation, resolve_device

    options.check()
    use_threads(options.threads)  # before any torch work: --threads, else OMP_NUM_THREADS
    paths = options.result_paths()
    inputs = {"checkpoint": options.checkpoint, "data": options.data}
    artifact.refuse_existing(paths, options.force, kinds=["metrics", "generations"], inputs=inputs)
    names = check_metrics(options.metric)
    examples = read_examples(options, limit=options.limit, require_references=True)
    if "meteor" in names:
        from nash_cli.wordnet import load_wordnet

        load_wordnet()  # a missing WordNet fails now, not after generating
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    exported = is_exported(options.checkpoint)
    if exported:
        from nash_cli.export import require_ctranslate2

        require_ctranslate2(f"evaluating {options.checkpoint} (a CTranslate2 model)")
    config = None if exported else artifact.load_config(options.checkpoint, **load)
    tokenizer = artifact.load_tokenizer(options.checkpoint, trust_remote_code=options.trust_remote_code)
    languages = set_languages(tokenizer, options.source_lang, options.target_lang, where=options.checkpoint)
    examples = languages.inputs(examples)
    model, notes = load_for_generation(
        options.checkpoint, options, device=resolve_device(options.device), dtype=options.dtype, config=config,
        vocab_map=options.vocab_map,
    )
    settings = languages.generation(resolve_settings(model, num_beams=options.beams, max_new_tokens=options.max_new_tokens))
    masks_applied = bool(notes)
    engine = as_engine(model)
    notes = notes + engine.notes(settings.num_beams)
    progress = progress or Progress("eval", unit="example")
    progress.update(total=len(examples), completed=0)  # the rate counts from the first batch
    result = evaluate(
        model,
        tokenizer,
        examples,
        metrics=names,
        settings=settings,
        batch_size=options.batch,
        max_source_length=options.max_source_length,
        on_batch=lambda n: progress.advance(n),
    )
    document = metrics_document(
        result,
        examples,
        metrics=names,
        model=options.checkpoint,
        data=options.data,
        split=options.split,
        device=str(model.device),
        dtype=options.dtype,
        engine=engine.engine_info(),
        masks_applied=masks_applied,
        **({"languages": languages.to_dict()} if languages != LanguagePair() else {}),
    )
    if paths:
        write_results(document, generation_records(result, examples), *paths)
        document["files"] = {"metrics": str(paths[0]), "generations": str(paths[1])}
    document["notes"] = notes
    return EvalReport(document)


STAGE = declare(
    Stage(
        name="eval",
        command="eval",
        options=EvalOptions,
        run=run,
        order=90,
        role="measure",
        reads=ANY_STATE,
        writes=None,
        data="eval",
        result_file=METRICS_FILE,
    )
)
