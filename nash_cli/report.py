"""Run reports: the paper's Table 1, Figure 5 (quality against speedup) and Figure 6 (the pruned
encoder's structure) for one `nash run` directory.

Everything is read back from the files the stages wrote (`run.json`, each stage's `nash.json`,
`bench.json`, `metrics.json`); nothing is recomputed, so a report always shows what was measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.artifact import FIGURE_SOFTWARE, releases_outputs
from nash_cli.errors import NashError

#: Score shown first for each metric, as the paper reports it.
HEADLINE = {"rouge": "rougeL", "meteor": "meteor", "bleu": "bleu", "chrf": "chrf", "exact_match": "exact_match",
            "accuracy": "accuracy"}


@dataclass
class ModelRow:
    """One model of a run, as Table 1 shows it."""

    label: str
    """"teacher", "NASH (k DL)", or "NASH (k DL) ct2 int8" for the student's CTranslate2 export."""
    path: str
    """The checkpoint."""
    decoder_layers: int | None = None
    """Decoder depth."""
    parameters: int | None = None
    """Total parameters."""
    scores: dict[str, float] = field(default_factory=dict)
    """Quality scores (0-1) from `nash eval`."""
    speedup: float | None = None
    """Generation speedup against the teacher from `nash bench` (1.0 for the teacher)."""
    speedup_range: tuple[float, float] | None = None
    """Lowest and highest per-repeat speedup."""
    latency_s: float | None = None
    """Median seconds per generate() call."""
    mean_generated_length: float | None = None
    """Mean new tokens per output."""
    engine: str | None = None
    """What ran it in the bench: "torch float32", "ct2 int8", ..."""


@dataclass
class RunSummary:
    """What a run directory holds, gathered for reporting."""

    name: str
    """The recipe's name."""
    description: str | None
    """The recipe's description."""
    run_dir: Path
    """The run directory."""
    rows: list[ModelRow]
    """Teacher first, then the student(s)."""
    metrics: list[str]
    """Score names shown, headline first."""
    pruning: dict[str, Any] | None
    """The prune-encoder stage's results (sparsity, heads / units kept per layer)."""
    stage_seconds: dict[str, float]
    """Wall time of each stage."""
    bench_settings: dict[str, Any] | None
    """How speed was measured (device, batch, beams, lengths)."""


def _read_json(path: Path) -> dict[str, Any] | None:
    """A result file of the run as a JSON object; None when it is missing or unreadable.

    Raises:
        NashError: naming the file when it holds JSON of another shape (a list, a number), which
            nash never writes.
    """
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        raise NashError(
            f"{path} holds a JSON {type(document).__name__}, not the JSON object nash writes; rerun the stage "
            "that wrote it (nash run RECIPE -o RUN reruns what changed)"
        )
    return document


def _stage_dirs(run_dir: Path) -> dict[str, Path]:
    dirs = {}
    for path in sorted(run_dir.iterdir()):
        if path.is_dir() and path.name[:2].isdigit() and path.name[2:3] == "-":
            dirs[path.name[3:].replace("-", "_")] = path
    return dirs


def _decoder_layers(checkpoint: str) -> int | None:
    from nash_cli import artifact
    from nash_cli.arch import family_of
    from nash_cli.export.runtime import is_ctranslate2_dir

    try:
        if is_ctranslate2_dir(checkpoint):  # the export recorded its source's depth
            manifest = artifact.read_manifest(checkpoint) or {}
            return ((manifest.get("ctranslate2") or {}).get("model_config") or {}).get("decoder_layers")
        # A hub model's depth only from the local cache: a report never waits on the network.
        config = artifact.load_config(checkpoint, cached_only=True)
    except NashError:
        return None
    return family_of(config).num_layers(config, "decoder")


#: Models a run evaluates, in Table 1's order.
LABELS = ("teacher", "student", "exported")


def collect(run_dir: str | Path) -> RunSummary:
    """Reads a run directory written by `nash run`.

    Raises:
        NashError: when `run_dir` is not a run directory or has no evaluated models yet.
    """
    run_dir = Path(run_dir)
    state = _read_json(run_dir / "run.json")
    if state is None:
        raise NashError(f"{run_dir} is not a nash run directory (no run.json); pass the -o of `nash run`")
    import yaml

    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").is_file() else {}
    dirs = _stage_dirs(run_dir)
    rows: dict[str, ModelRow] = {}
    metric_names: list[str] = []
    if "eval" in dirs:
        for label in LABELS:
            metrics = _read_json(dirs["eval"] / label / "metrics.json")
            if not metrics:
                continue
            checkpoint = str(metrics.get("checkpoint") or metrics.get("model") or "")
            rows[label] = ModelRow(label=label, path=checkpoint, scores=dict(metrics.get("scores", {})))
            for name in metrics.get("metrics", []):
                headline = HEADLINE.get(name, name)
                if headline not in metric_names:
                    metric_names.append(headline)
    if not rows:
        raise NashError(f"{run_dir} has no evaluated models yet; let `nash run` finish its eval stage")
    for name in list(rows.values())[0].scores:
        if name not in metric_names:
            metric_names.append(name)
    bench = _read_json(dirs["bench"] / "bench.json") if "bench" in dirs else None
    bench_settings = None
    if bench:
        try:
            bench_settings = _read_bench(bench, rows)
        except (KeyError, TypeError, AttributeError, IndexError) as error:
            raise NashError(
                f"{dirs['bench'] / 'bench.json'} is not the bench result nash writes ({type(error).__name__}: {error}); "
                "rerun the bench stage (nash run RECIPE -o RUN reruns what changed)"
            ) from None
    for row in rows.values():
        if row.path:
            row.decoder_layers = _decoder_layers(row.path)
    student = rows.get("student")
    if student and student.decoder_layers:
        student.label = f"NASH ({student.decoder_layers} DL)"
    exported = rows.get("exported")
    if exported:
        manifest = _read_json(Path(exported.path) / "nash.json") or {}
        base = f"NASH ({exported.decoder_layers} DL)" if exported.decoder_layers else "student"
        exported.label = f"{base} ct2 {manifest.get('quantization') or ''}".strip()
    pruning = None
    if "prune_encoder" in dirs:
        pruning = (_read_json(dirs["prune_encoder"] / "nash.json") or {}).get("prune_encoder")
    seconds = {key: record.get("seconds") for key, record in state.get("stages", {}).items() if record.get("seconds")}
    return RunSummary(
        name=recipe.get("name", run_dir.name),
        description=recipe.get("description"),
        run_dir=run_dir,
        rows=[rows[label] for label in LABELS if label in rows],
        metrics=metric_names,
        pruning=pruning,
        stage_seconds=seconds,
        bench_settings=bench_settings,
    )


def _read_bench(bench: dict[str, Any], rows: dict[str, ModelRow]) -> dict[str, Any]:
    """Fills the rows' engine, size and speed from `bench.json`; returns how speed was measured."""
    reports = bench.get("models", [])
    baseline = bench.get("baseline")
    for report in reports:
        engine = report.get("engine") or {}
        if report["name"] == baseline:
            row = rows.get("teacher")
        elif engine.get("engine") == "ctranslate2":
            row = rows.get("exported")
        else:
            row = rows.get("student")
        if row is None:
            continue
        if engine:
            name = {"transformers": "torch", "ctranslate2": "ct2"}.get(engine.get("engine"), engine.get("engine"))
            row.engine = f"{name} {engine.get('compute_type', '')}".strip()
        row.parameters = report["parameters"]["total"]
        row.latency_s = report["latency_s"]["median"]
        row.mean_generated_length = report.get("mean_generated_length")
        if report.get("speedup"):
            row.speedup = report["speedup"]["value"]
            spread = report["speedup"].get("per_repeat", {})
            if spread:
                row.speedup_range = (spread["min"], spread["max"])
        elif report["name"] == baseline:
            row.speedup = 1.0
    return {
        "settings": bench.get("settings"),
        "inputs": {k: v for k, v in (bench.get("inputs") or {}).items() if not isinstance(v, list)},
        "environment": bench.get("environment"),
        "generation": reports[0].get("generation") if reports else None,
    }


def table1_rows(summary: RunSummary, *, max_metrics: int = 4) -> tuple[list[str], list[list[str]]]:
    """Header and rows of Table 1 as text: model, decoder layers, parameters, scores, speedup."""
    header = ["model", "decoder layers", "parameters", *summary.metrics[:max_metrics], "speedup"]
    body = []
    for row in summary.rows:
        speedup = "-" if row.speedup is None else f"{row.speedup:.2f}x"
        if row.speedup_range and row.label != "teacher":
            speedup += f" ({row.speedup_range[0]:.2f}-{row.speedup_range[1]:.2f})"
        body.append(
            [
                row.label,
                "-" if row.decoder_layers is None else str(row.decoder_layers),
                "-" if row.parameters is None else f"{row.parameters / 1e6:.2f}M",
                *[f"{100 * row.scores[name]:.2f}" if name in row.scores else "-" for name in summary.metrics[:max_metrics]],
                speedup,
            ]
        )
    return header, body


def rich_table1(summary: RunSummary):
    """Table 1 as a Rich table."""
    from rich.table import Table

    header, body = table1_rows(summary, max_metrics=2)  # fits an 80-column terminal
    header[1:3] = ["dec. layers", "params"]
    table = Table(title=f"Table 1 - {summary.name}")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in body:
        table.add_row(*row)
    return table


def plot_quality_speedup(summary: RunSummary, path: Path) -> Path:
    """Figure 5: headline quality against speedup, one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary.metrics[0]
    figure, axis = plt.subplots(figsize=(5.5, 4))
    values = [100 * row.scores[metric] for row in summary.rows if metric in row.scores]
    for row in summary.rows:
        if row.speedup is None or metric not in row.scores:
            continue
        value = 100 * row.scores[metric]
        marker = "s" if row.label == "teacher" else "*"
        axis.scatter([row.speedup], [value], s=140 if marker == "*" else 70, marker=marker, zorder=3, label=row.label)
        if row.speedup_range and row.label != "teacher":
            axis.plot(row.speedup_range, [value, value], color="grey", linewidth=1, zorder=2)
        axis.annotate(row.label, (row.speedup, value), textcoords="offset points", xytext=(6, 6))
    axis.set_xlabel("generation speedup against the teacher (x)")
    axis.set_ylabel(metric)
    axis.set_title(f"{summary.name}: quality vs speedup")
    axis.grid(True, alpha=0.3)
    axis.set_xlim(left=0.8, right=max([row.speedup or 1.0 for row in summary.rows]) * 1.15 + 0.1)
    if values:
        # a fixed margin, so that a 0.1-point difference does not fill the whole plot
        margin = max(2.0, 0.25 * (max(values) - min(values)))
        axis.set_ylim(min(values) - margin, min(100.0, max(values) + margin) if max(values) <= 100 else max(values) + margin)
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": FIGURE_SOFTWARE})
    plt.close(figure)
    return path


def plot_encoder_structure(pruning: dict[str, Any], path: Path) -> Path:
    """Figure 6: heads and FFN units kept per encoder layer after pruning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = pruning["heads_per_layer"]
    units = pruning["ffn_units_per_layer"]
    layers = list(range(len(heads)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.bar(layers, [pruning["num_heads"]] * len(layers), color="#dddddd", label="teacher")
    left.bar(layers, heads, color="#1f77b4", label="kept")
    left.set_title("attention heads kept")
    right.bar(layers, [pruning["d_ff"]] * len(layers), color="#dddddd", label="teacher")
    right.bar(layers, units, color="#ff7f0e", label="kept")
    right.set_title("FFN units kept")
    for axis in (left, right):
        axis.set_xlabel("encoder layer")
        axis.set_xticks(layers)
        axis.legend(loc="lower right")
    sparsity = pruning.get("deterministic_sparsity")
    figure.suptitle(
        f"pruned encoder (sparsity {sparsity:.3f}, target {pruning.get('target_sparsity')})"
        if sparsity is not None
        else "pruned encoder"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120, metadata={"Software": FIGURE_SOFTWARE})
    plt.close(figure)
    return path


REPORT_FILES = ("report.md", "quality_vs_speedup.png", "encoder_structure.png")


@releases_outputs
def write_report(run_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Writes `report.md`, `quality_vs_speedup.png` and `encoder_structure.png` into the run.

    The files are published as one set (see `nash_cli.artifact.write_files_atomic`): a report
    killed between two renames is finished by the next `nash report` on the run. `force`
    replaces only the files a nash report wrote.

    Args:
        run_dir: A run directory written by `nash run`.
        force: Replace an existing report.

    Returns:
        The paths written and Table 1 as data.
    """
    import tempfile

    from nash_cli.artifact import is_nash_file, refuse_existing, write_files_atomic

    summary = collect(run_dir)
    run_dir = summary.run_dir
    # Figures beside a nash report.md are that report's (earlier nash wrote them without the tag).
    figure = None if is_nash_file(run_dir / "report.md", "report") else "figure"
    # report.md first: it names the set (its journal and lock sit beside it).
    refuse_existing([run_dir / name for name in REPORT_FILES], force, kinds=["report", figure, figure])
    with tempfile.TemporaryDirectory(prefix=".report-", dir=run_dir) as rendering:
        rendered = {"figure_5": plot_quality_speedup(summary, Path(rendering) / "quality_vs_speedup.png")}
        if summary.pruning and summary.pruning.get("heads_per_layer"):
            rendered["figure_6"] = plot_encoder_structure(summary.pruning, Path(rendering) / "encoder_structure.png")
        contents: dict[Path, str | bytes] = {run_dir / "report.md": _markdown(summary, "figure_6" in rendered)}
        contents.update({run_dir / path.name: path.read_bytes() for path in rendered.values()})
    write_files_atomic(contents)
    written = {key: str(run_dir / path.name) for key, path in rendered.items()}
    written["report"] = str(run_dir / "report.md")
    header, body = table1_rows(summary)
    return {"written": written, "table1": {"header": header, "rows": body}}


def _markdown(summary: RunSummary, with_structure: bool) -> str:
    header, body = table1_rows(summary)
    lines = [f"# nash report: {summary.name}", ""]
    if summary.description:
        lines += [summary.description, ""]
    lines += ["## Table 1", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append("")
    lines.append(
        "Scores are percentages from `nash eval` on the run's evaluation data; speedup is the ratio of "
        "median generation times from `nash bench`, teacher and student timed interleaved in one run "
        "(the range is the lowest and highest per-repeat ratio)."
    )
    engines = [f"{row.label}: {row.engine}" for row in summary.rows if row.engine]
    if any(row.label != "teacher" and "ct2" in (row.engine or "") for row in summary.rows):
        lines.append(
            "The ct2 row is the student exported by `nash export` and run in CTranslate2 on the same inputs, beams, "
            "lengths and threads (" + "; ".join(engines) + ")."
        )
    if summary.bench_settings:
        environment = summary.bench_settings.get("environment") or {}
        generation = summary.bench_settings.get("generation") or {}
        lines += [
            "",
            f"Speed measured on {environment.get('device_name') or environment.get('device', '?')} "
            f"({environment.get('threads', '?')} threads), beams {generation.get('num_beams', '?')}, "
            f"inputs {json.dumps(summary.bench_settings.get('inputs'))}.",
        ]
    lines += ["", "## Quality against speedup (Figure 5)", "", "![quality vs speedup](quality_vs_speedup.png)", ""]
    if with_structure:
        pruning = summary.pruning
        whole = pruning.get("whole_model_sparsity")
        lines += [
            "## The pruned encoder (Figure 6)",
            "",
            "![encoder structure](encoder_structure.png)",
            "",
            f"Target encoder sparsity {pruning.get('target_sparsity')}, reached "
            f"{pruning.get('deterministic_sparsity'):.4f} with the deterministic masks "
            f"(expected {pruning.get('expected_sparsity'):.4f}); whole-model sparsity against the teacher "
            f"(embeddings excluded, deleted decoder layers counted) {'-' if whole is None else f'{whole:.4f}'}.",
            "",
            "| encoder layer | heads kept | FFN units kept |",
            "|---|---|---|",
            *[
                f"| {i} | {h} / {pruning['num_heads']} | {u} / {pruning['d_ff']} |"
                for i, (h, u) in enumerate(zip(pruning["heads_per_layer"], pruning["ffn_units_per_layer"]))
            ],
            "",
        ]
    if summary.stage_seconds:
        lines += ["## Stage times", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {seconds} |" for stage, seconds in summary.stage_seconds.items()]
        lines.append("")
    return "\n".join(lines)
