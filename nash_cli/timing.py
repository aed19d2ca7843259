"""Generation speed, measured the way the NASH paper does: the whole `generate()` call.

One timed call is `model.generate` on one batch, every decoding step until all sequences end,
after warm-up. Several models run interleaved within each repeat (A B C, then C B A, ...) so
that drift in the machine's speed (thermal throttling, other processes) hits all of them alike
and the per-repeat ratios against the baseline stay meaningful.

Everything here takes loaded models and prepared batches (`nash_cli.batches`); the `bench` stage
(`nash_cli.stages.bench`) does the loading. Every model is timed through the generation interface
(`nash_cli.generation.GenerationEngine`), whatever engine runs it.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from nash_cli.batches import Batch
from nash_cli.errors import NashError
from nash_cli.generation import GenerationEngine, GenerationSettings, as_engine, generated_lengths

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BenchSettings:
    """How the benchmark runs (generation settings are per model: see `GenerationSettings`)."""

    repeats: int = 10
    """Timed passes; each pass runs every model on every batch."""
    warmup: int = 1
    """Untimed passes before timing (compilation, allocator, caches); peak memory is taken here."""
    breakdown: bool = False
    """After timing, one extra pass with hooks that split the time by module."""


def _percentile(values: Sequence[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), without needing numpy.
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min and max of a list of timings (seconds)."""
    return {
        "median": statistics.median(values),
        "p90": _percentile(values, 90),
        "p99": _percentile(values, 99),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def speedup_stats(baseline_repeats: Sequence[float], model_repeats: Sequence[float]) -> dict[str, Any]:
    """Speedup of a model over the baseline, from interleaved repeats.

    Args:
        baseline_repeats: The baseline's time per repeat (seconds, summed over batches).
        model_repeats: The model's time in the same repeats, same order.

    Returns:
        `value` (median baseline time / median model time) and the spread of the per-repeat
        ratios (baseline / model within the same repeat): `min`, `q25`, `median`, `q75`, `max`,
        plus the ratios themselves.
    """
    if len(baseline_repeats) != len(model_repeats) or not model_repeats:
        raise ValueError("speedup needs the same, non-zero number of repeats for both models")
    ratios = [b / m for b, m in zip(baseline_repeats, model_repeats)]
    return {
        "value": statistics.median(baseline_repeats) / statistics.median(model_repeats),
        "per_repeat": {
            "min": min(ratios),
            "q25": _percentile(ratios, 25),
            "median": statistics.median(ratios),
            "q75": _percentile(ratios, 75),
            "max": max(ratios),
        },
        "ratios": ratios,
    }


@dataclass
class ModelReport:
    """What the benchmark measured for one model."""

    name: str
    """The name the caller gave (usually the checkpoint path)."""
    parameters: dict[str, int]
    """`nash_cli.arch.count_parameters`: total, embeddings, encoder, decoder, non_embedding."""
    generation: dict[str, Any]
    """The generation settings used (beams, min/max new tokens, compile)."""
    latency_s: dict[str, float]
    """Per `generate()` call (one batch): median, p90, p99, mean, min, max, in seconds."""
    repeat_s: list[float]
    """Time of each repeat (summed over batches), in repeat order."""
    samples_per_s: float
    """Input sequences per second over all timed calls."""
    tokens_per_s: float
    """Generated tokens per second (returned sequences only, not every beam)."""
    mean_generated_length: float
    """Mean new tokens per returned sequence, up to and including end-of-sequence."""
    peak_memory: dict[str, Any]
    """MiB, over the last warm-up pass: `weights_mib` (parameters and buffers); CPU: `peak_mib`,
    the process's peak RSS (sampled every `nash_cli.memory.RSS_INTERVAL_S`), and `increase_mib` over the RSS
    before the pass (weights already paged in); CUDA: torch.cuda.max_memory_allocated and its
    rise over the allocation before the pass."""
    speedup: dict[str, Any] | None = None
    """Against the baseline (see `speedup_stats`); None for the baseline or without one."""
    breakdown: dict[str, Any] | None = None
    """Seconds per part from the hooked pass (encoder, decoder layers, lm_head, rest)."""
    engine: dict[str, Any] = field(default_factory=dict)
    """What ran the model: `engine` (transformers or ctranslate2), `compute_type` (the torch dtype,
    or CTranslate2's compute type), `device`, `threads`."""


@dataclass
class BenchResult:
    """The whole benchmark: one report per model, plus what it ran on."""

    models: list[ModelReport]
    """Per model, in the order given."""
    baseline: str | None
    """Name of the baseline model, if any."""
    settings: dict[str, Any]
    """Benchmark settings (repeats, warm-up, breakdown)."""
    inputs: dict[str, Any]
    """Batches: how many, their size and source lengths, where they came from."""
    environment: dict[str, Any] = field(default_factory=dict)
    """Device, threads, library versions."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


class _Breakdown:
    """Forward hooks that add up wall time per module (synchronising CUDA at every boundary)."""

    def __init__(self, parts: Mapping[str, Any], sync: Callable[[], None]):
        self.sync = sync
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._start: dict[str, float] = {}
        self._handles = []
        for name, module in parts.items():
            self.seconds[name] = 0.0
            self.calls[name] = 0
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._exit(name)))

    def _enter(self, name):
        def hook(module, args):
            self.sync()
            self._start[name] = time.perf_counter()

        return hook

    def _exit(self, name):
        def hook(module, args, output):
            self.sync()
            self.seconds[name] += time.perf_counter() - self._start.pop(name)
            self.calls[name] += 1

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _generate_once(engine: GenerationEngine, batch: Batch, settings: GenerationSettings) -> tuple[float, "torch.Tensor"]:
    # Arguments (and any fresh cache object) are prepared before the clock starts; only the
    # decoding call and waiting for the device are timed, and the output becomes ids after.
    call = engine.prepare(batch.input_ids, batch.attention_mask, settings)
    engine.synchronize()
    start = time.perf_counter()
    output = call()
    engine.synchronize()
    seconds = time.perf_counter() - start
    return seconds, engine.sequences(output)


def run_bench(
    models: Mapping[str, Any],
    batches: Sequence[Batch],
    generation: Mapping[str, GenerationSettings],
    settings: BenchSettings,
    *,
    baseline: str | None = None,
    on_call: Callable[[str, str], None] | None = None,
    model_batches: Mapping[str, Sequence[Batch]] | None = None,
) -> BenchResult:
    """Benchmarks `models` on `batches`, interleaved, and compares them with `baseline`.

    Args:
        models: Name -> loaded model (a torch model or any `GenerationEngine`, see
            `nash_cli.generation.as_engine`), all on the same device; the baseline among them.
        batches: Inputs shared by every model (moved to the models' device here).
        generation: Name -> generation settings for that model.
        settings: Repeats, warm-up, breakdown.
        baseline: Name of the model the others are compared with.
        on_call: Called as `on_call(phase, name)` after each `generate()` (progress bars);
            phase is "warmup", "timed" or "breakdown".
        model_batches: Name -> that model's own batches of the same texts, for a model whose
            tokenizer differs (a pruned vocabulary); the others use `batches`.

    Returns:
        A `BenchResult` with one `ModelReport` per model, in the order of `models`.
    """
    import torch

    names = list(models)
    if not names:
        raise NashError("give at least one model to benchmark")
    if baseline is not None and baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models")
    if settings.repeats < 1:
        raise NashError(f"--repeats must be at least 1, got {settings.repeats}")
    if settings.warmup < 0:
        raise NashError(f"--warmup must be 0 or more, got {settings.warmup}")
    engines = {name: as_engine(models[name]) for name in names}
    devices = {engines[name].device for name in names}
    if len(devices) != 1:
        raise ValueError(f"all models must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    batches = [batch.to(device) for batch in batches]
    own = {name: [batch.to(device) for batch in inputs] for name, inputs in (model_batches or {}).items()}
    inputs_of = {name: own.get(name, batches) for name in names}
    notify = on_call or (lambda phase, name: None)

    memory: dict[str, dict[str, Any]] = {name: {} for name in names}
    latencies: dict[str, list[float]] = {name: [] for name in names}
    repeat_s: dict[str, list[float]] = {name: [] for name in names}
    lengths: dict[str, list[int]] = {name: [] for name in names}
    breakdowns: dict[str, dict[str, Any]] = {}

    with torch.inference_mode():
        for name in names:
            for round_ in range(settings.warmup):
                last = round_ == settings.warmup - 1
                memory[name] = _warm_up(engines[name], inputs_of[name], generation[name], measure=last)
                for _ in batches:
                    notify("warmup", name)
        for repeat in range(settings.repeats):
            # A B C then C B A: a linear drift within a pair of repeats cancels out.
            order = names if repeat % 2 == 0 else names[::-1]
            for name in order:
                total = 0.0
                for batch in inputs_of[name]:
                    seconds, sequences = _generate_once(engines[name], batch, generation[name])
                    total += seconds
                    latencies[name].append(seconds)
                    if repeat == 0:
                        lengths[name] += generated_lengths(sequences, engines[name].eos_token_ids or None)
                    notify("timed", name)
                repeat_s[name].append(total)
        if settings.breakdown:
            for name in names:
                modules = engines[name].breakdown_parts()
                if modules is None:
                    continue  # no module hooks inside another engine
                breakdowns[name] = _breakdown(engines[name], modules, inputs_of[name], generation[name])
                for _ in batches:
                    notify("breakdown", name)

    samples_per_repeat = sum(batch.size for batch in batches)
    reports = []
    for name in names:
        time_total = sum(repeat_s[name])
        tokens_per_repeat = sum(lengths[name])
        reports.append(
            ModelReport(
                name=name,
                parameters=engines[name].parameter_counts(),
                generation=generation[name].to_dict(),
                latency_s=summarize(latencies[name]),
                repeat_s=repeat_s[name],
                samples_per_s=samples_per_repeat * settings.repeats / time_total,
                tokens_per_s=tokens_per_repeat * settings.repeats / time_total,
                mean_generated_length=tokens_per_repeat / samples_per_repeat,
                peak_memory=memory[name],
                speedup=(
                    speedup_stats(repeat_s[baseline], repeat_s[name])
                    if baseline is not None and name != baseline
                    else None
                ),
                breakdown=breakdowns.get(name),
                engine=engines[name].engine_info(),
            )
        )
    inputs = {
        "num_batches": len(batches),
        "batch_sizes": [batch.size for batch in batches],
        "source_lengths": [int(batch.input_ids.shape[1]) for batch in batches],
        "source_tokens_mean": float(
            sum(int(batch.attention_mask.sum()) for batch in batches) / samples_per_repeat
        ),
    }
    if own:
        inputs["source_tokens_mean_per_model"] = {
            name: float(sum(int(batch.attention_mask.sum()) for batch in inputs_of[name]) / samples_per_repeat)
            for name in names
        }
    info = environment(device)
    for report in reports:
        # an engine whose library the environment does not name yet (CTranslate2) adds its version
        if "version" in report.engine:
            info.setdefault(report.engine["engine"], report.engine["version"])
    return BenchResult(
        models=reports,
        baseline=baseline,
        settings=asdict(settings),
        inputs=inputs,
        environment=info,
    )


def _warm_up(engine: GenerationEngine, batches, generation, *, measure: bool) -> dict[str, Any]:
    def run_pass() -> None:
        for batch in batches:
            _generate_once(engine, batch, generation)

    if not measure:
        run_pass()
        return {}
    return engine.memory_pass(run_pass)


def _breakdown(engine: GenerationEngine, modules, batches, generation) -> dict[str, Any]:
    hooks = _Breakdown(modules, engine.synchronize)
    try:
        total = sum(_generate_once(engine, batch, generation)[0] for batch in batches)
    finally:
        hooks.remove()
    seconds = hooks.seconds
    decoder_layers = [seconds[name] for name in seconds if name.startswith("decoder.")]
    parts = {
        "encoder": seconds["encoder"],
        "decoder_layers": sum(decoder_layers),
        "lm_head": seconds["lm_head"],
    }
    parts["rest"] = total - sum(parts.values())
    return {
        "total_s": total,
        "seconds": parts,
        "fraction": {key: value / total for key, value in parts.items()},
        "decoder_layer_s": decoder_layers,
        "decoder_steps": hooks.calls["lm_head"],
    }


def environment(device) -> dict[str, Any]:
    """Device name, thread counts and library versions, for the record."""
    import torch
    import transformers

    from nash_cli import __version__

    info: dict[str, Any] = {
        "device": str(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "nash": __version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = _cpu_name()
    try:
        import os

        info["cpu_count"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        import os

        info["cpu_count"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
