"""Training options shared by `distill` and `prune-encoder`, declared once.

Like `_data_options`, each alias is an `Annotated` type carrying its Typer option, so both
commands spell and document the flags identically; `train_config` and `data_spec` turn a
command's arguments into the engine's settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from nash_cli.train.distill import DataSpec
    from nash_cli.train.config import TrainConfig

TRAIN = "Training"
OBJECTIVE = "Objective"
RUN = "Run"

EpochsOption = Annotated[int, typer.Option("--epochs", help="Passes over the training data.", rich_help_panel=TRAIN)]
MaxStepsOption = Annotated[
    Optional[int], typer.Option("--max-steps", help="Stop after this many optimiser steps (overrides --epochs).", rich_help_panel=TRAIN)
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", help="Examples per process per micro-batch.", rich_help_panel=TRAIN)]
GradAccumOption = Annotated[
    int, typer.Option("--grad-accum", help="Micro-batches per optimiser step (global batch = batch size x this x processes).", rich_help_panel=TRAIN)
]
WeightDecayOption = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (not on biases and norms).", rich_help_panel=TRAIN)]
WarmupStepsOption = Annotated[int, typer.Option("--warmup-steps", help="Linear warm-up steps; then linear decay to 0.", rich_help_panel=TRAIN)]
MaxGradNormOption = Annotated[float, typer.Option("--max-grad-norm", help="Clip the gradient norm to this (0: no clipping).", rich_help_panel=TRAIN)]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for data order, dropout and initialisation.", rich_help_panel=TRAIN)]
FreezeEmbeddingsOption = Annotated[
    bool, typer.Option("--freeze-embeddings", help="Keep token embeddings fixed (a tied lm_head too).", rich_help_panel=TRAIN)
]
MixedPrecisionOption = Annotated[
    Optional[str],
    typer.Option("--mixed-precision", help="no, fp16 or bf16 (default: accelerate's config, else no).", rich_help_panel=TRAIN),
]
TemperatureOption = Annotated[float, typer.Option("--temperature", help="Distillation temperature T.", rich_help_panel=OBJECTIVE)]
AlphaCeOption = Annotated[float, typer.Option("--alpha-ce", help="Weight of cross-entropy to the labels (with a teacher).", rich_help_panel=OBJECTIVE)]
AlphaKdOption = Annotated[float, typer.Option("--alpha-kd", help="Weight of T^2 * KL(teacher || student).", rich_help_panel=OBJECTIVE)]
AlphaEncOption = Annotated[float, typer.Option("--alpha-enc", help="Weight of the encoder hidden-state MSE (0: off).", rich_help_panel=OBJECTIVE)]
AlphaDecOption = Annotated[float, typer.Option("--alpha-dec", help="Weight of the decoder hidden-state MSE (0: off).", rich_help_panel=OBJECTIVE)]
DecoderLayerMapOption = Annotated[
    Optional[str],
    typer.Option(
        "--decoder-layer-map",
        help="Teacher decoder layer for each student decoder layer, e.g. 0,5,11 (default: the student's nash.json, else 1:1).",
        rich_help_panel=OBJECTIVE,
    ),
]
EncoderLayerMapOption = Annotated[
    Optional[str],
    typer.Option(
        "--encoder-layer-map",
        help="Teacher encoder layer for each student encoder layer (default: 1:1 when depths match, else no encoder loss).",
        rich_help_panel=OBJECTIVE,
    ),
]
SaveEveryOption = Annotated[int, typer.Option("--save-every", help="Write a resumable state every N steps (0: never).", rich_help_panel=RUN)]
EvalEveryOption = Annotated[
    Optional[int], typer.Option("--eval-every", help="Evaluate every N steps (default: every epoch, and at the end).", rich_help_panel=RUN)
]
LogEveryOption = Annotated[int, typer.Option("--log-every", help="Log mean losses to train_log.jsonl every N steps.", rich_help_panel=RUN)]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its last state in OUTPUT.partial/.", rich_help_panel=RUN)
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace an existing output; discard an interrupted run's state.", rich_help_panel=RUN)
]
AllowPickleOption = Annotated[
    bool, typer.Option("--allow-pickle", help="Accept pytorch_model.bin weights (loaded with weights_only=True).")
]
TrustRemoteCodeOption = Annotated[
    bool, typer.Option("--trust-remote-code", help="Run the checkpoints' own modeling code (only if you trust it).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def train_config(arguments: dict[str, Any], output: Path) -> "TrainConfig":
    """The engine's settings from a training command's arguments (its `locals()`)."""
    from dataclasses import fields

    from nash_cli.train.config import TrainConfig

    names = {field.name for field in fields(TrainConfig)} - {"output"}
    return TrainConfig(output=output, **{name: arguments[name] for name in names if name in arguments})


def data_spec(arguments: dict[str, Any]) -> "DataSpec":
    """The data settings from a training command's arguments (its `locals()`)."""
    from dataclasses import fields

    from nash_cli.train.distill import DataSpec

    return DataSpec(**{field.name: arguments[field.name] for field in fields(DataSpec) if field.name in arguments})
