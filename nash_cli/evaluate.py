"""`nash eval` as a library: generate for every example, score, and write the results.

Generation is batched with sources sorted by length (`nash_cli.generation.generate_texts`);
scores come from `nash_cli.metrics`. With several references per example every metric takes
the best reference for that example (BLEU, a corpus metric, uses all references at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.data import Example
from nash_cli.errors import NashError
from nash_cli.generation import GenerationSettings, generate_texts
from nash_cli.metrics import MetricScores, check_metrics, compute_metrics
from nash_cli.reports import json_text, jsonl_text, write_files


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


def generations_path_for(metrics_path: Path) -> Path:
    """Where generations go beside a metrics file: `generations.jsonl` for `metrics.json`,
    else `<stem>.generations.jsonl`."""
    if metrics_path.stem == "metrics":
        return metrics_path.with_name("generations.jsonl")
    return metrics_path.with_name(f"{metrics_path.stem}.generations.jsonl")


def metrics_document(result: EvalResult, examples: Sequence[Example], *, metrics: Sequence[str], **context) -> dict[str, Any]:
    """The metrics.json document: scores, counts, settings, timing, plus `context` (model, data)."""
    return {
        **context,
        "num_examples": len(examples),
        "metrics": list(check_metrics(metrics)),
        "scores": result.metrics.scores,
        "multi_reference": "best reference per example (BLEU: all references, corpus-level)",
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
    """Writes metrics.json and generations.jsonl, each atomically (both staged before either is renamed)."""
    write_files({metrics_path: json_text(document), generations_path: jsonl_text(records)})
