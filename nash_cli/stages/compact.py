"""`compact`: remove the masked encoder heads and FFN units of a `masked` checkpoint physically.

Input: a `masked` checkpoint (trained weights in `model.safetensors`, L0 masks in
`masks.safetensors`). Output: a `compact` checkpoint whose logits equal the masked model's
(deterministic masks). The surgery itself is `nash_cli.surgery.compact`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nash_cli.artifact import releases_outputs
from nash_cli.errors import require_finite_options
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input


@dataclass(kw_only=True)
class CompactOptions:
    """What `nash compact` does."""

    checkpoint: str
    """A masked checkpoint written by `prune-encoder`."""
    output: Path
    """Directory to write the compact model to."""
    force: bool = False
    """Replace the output if it exists."""
    trust_remote_code: bool = False
    """Load a checkpoint whose config or tokenizer names its own code (only if you trust it)."""

    def check(self) -> None:
        """NashError for a non-finite number (the stage has no other option to check before reading)."""
        require_finite_options(self)


@dataclass
class CompactResult:
    """What `run` did, for printing and JSON."""

    output: str
    """The written checkpoint."""
    custom_code: bool
    """Whether the output needs nash's modeling file (per-layer widths)."""
    parameters: dict[str, dict[str, int]]
    """`{"before"|"after": nash_cli.arch.count_parameters(...)}`."""
    heads: list[int]
    """Kept heads per encoder layer."""
    units: list[int]
    """Kept FFN units per encoder layer."""
    full_heads: int
    """Heads per layer before compaction."""
    full_units: int
    """FFN units per layer before compaction."""
    file_size: int
    """Bytes of the output's weight files."""
    seconds: float
    """Wall time of loading, slicing and writing."""
    engine: str = ""
    """One sentence: whether CTranslate2 runs this encoder as it is (the same heads in every layer,
    FFN widths multiples of 64) or pads it, and the structure prune-encoder recorded."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return asdict(self)


@releases_outputs
def run(options: CompactOptions, *, progress: Progress | None = None) -> CompactResult:
    """Loads a masked checkpoint, removes the pruned units, writes a compact checkpoint.

    Args:
        options: The stage's options.
        progress: Advanced through the three steps (load, compact, write), each named.

    Raises:
        NashError: an existing output without `force`, or an input that is not a masked checkpoint.
    """
    from nash_cli import artifact
    from nash_cli.arch import count_parameters
    from nash_cli.masking import encoder_shape, load_masks
    from nash_cli.surgery.compact import compact_model

    progress = progress or Progress("compact")
    started = time.perf_counter()
    options.check()
    artifact.check_output(options.output, options.force, inputs={"checkpoint": options.checkpoint})
    manifest = open_input(STAGE, options.checkpoint).manifest
    progress.update(total=3, status="loading")
    config = artifact.load_config(options.checkpoint, trust_remote_code=options.trust_remote_code)
    model = artifact.load_model(options.checkpoint, config=config, trust_remote_code=options.trust_remote_code)
    shape = encoder_shape(model)
    masks = load_masks(Path(options.checkpoint), shape)
    before = count_parameters(model)
    progress.advance(status="compacting")
    compact, custom = compact_model(model, masks.heads_mask, masks.ffn_mask)
    after = count_parameters(compact)
    del model
    heads = [int(row.sum()) for row in masks.heads_mask]
    units = [int(row.sum()) for row in masks.ffn_mask]
    extra = {
        "compact": {
            "custom_code": custom,
            "heads_per_layer": heads,
            "ffn_units_per_layer": units,
            "parameters": {"before": before, "after": after},
        },
        "prune_encoder": manifest.get("prune_encoder"),
    }
    progress.advance(status="writing")
    # The nash classes are registered for their auto classes: save_pretrained copies their
    # modeling file beside the weights and writes the config's auto_map.
    artifact.save_checkpoint(
        compact,
        options.output,
        source=options.checkpoint,
        stage="compact",
        arguments=arguments(options),
        state="compact",
        extra=extra,
        force=options.force,
    )
    progress.advance(status="written")
    size = sum(path.stat().st_size for path in artifact.weight_files(Path(options.output)))
    return CompactResult(
        output=str(options.output),
        custom_code=custom,
        parameters={"before": before, "after": after},
        heads=heads,
        units=units,
        full_heads=shape.num_heads,
        full_units=shape.d_ff,
        file_size=size,
        seconds=time.perf_counter() - started,
        engine=engine_fit(heads, units, (manifest.get("prune_encoder") or {}).get("structure")),
    )


def engine_fit(heads: list[int], units: list[int], structure: dict | None) -> str:
    """What CTranslate2 will make of these widths (`nash_cli.export.spec` pads heads to the most
    any layer kept), and the constraint prune-encoder recorded (`structure`, None before it had one)."""
    from nash_cli.export.spec import FFN_ALIGNMENT, ffn_alignment

    recorded = ""
    if structure is not None:
        recorded = (
            f" (prune-encoder: uniform heads {'on' if structure['uniform_heads'] else 'off'}, "
            f"FFN multiple of {structure['ffn_multiple_of']})"
        )
    aligned = ffn_alignment(units) >= FFN_ALIGNMENT
    if len(set(heads)) == 1 and heads[0] > 0 and aligned:
        return f"CTranslate2 runs this encoder without padding: {heads[0]} heads in every layer, FFN widths multiples of {FFN_ALIGNMENT}{recorded}"
    problems = []
    if len(set(heads)) > 1:
        problems.append(f"heads differ per layer, so nash export pads every layer to {max(heads)} with zero heads")
    if not aligned:
        problems.append(f"FFN widths are not all multiples of {FFN_ALIGNMENT}")
    return f"for CTranslate2: {'; '.join(problems) or 'no head is kept'}{recorded}"


STAGE = declare(
    Stage(
        name="compact",
        command="compact",
        options=CompactOptions,
        run=run,
        order=40,
        reads=frozenset({"masked"}),
        refusal="nothing to compact; compact the output of nash prune-encoder",
        writes="compact",
    )
)
