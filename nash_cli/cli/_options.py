"""Command-line options shared by several commands, declared once.

Each alias is a `typing.Annotated` type carrying its Typer option, so every command spells and
documents a flag identically; the defaults are not here but on the stages' option types
(`nash_cli.stages.*`), which the commands read them from:

    def command(data: DataOption, limit: LimitOption = DataOptions.limit, ...):
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

TRAIN = "Training"
OBJECTIVE = "Objective"
RUN = "Run"

_PANEL = "Data"

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help="Training / evaluation data: a .json, .jsonl, .csv, .tsv or .parquet file, a directory "
        "saved with datasets' save_to_disk, or a Hugging Face Hub dataset name (online only; "
        "'name:config' picks a configuration).",
        rich_help_panel=_PANEL,
    ),
]
EvalDataOption = Annotated[
    Optional[str],
    typer.Option(
        "--eval-data",
        help="Held-out data in any --data format, read with the same column options; gives an eval "
        "loss every --eval-every steps and picks the best checkpoint.",
        rich_help_panel=_PANEL,
    ),
]
SplitOption = Annotated[
    Optional[str],
    typer.Option(
        "--split",
        help="Split of a hub dataset, a saved DatasetDict or a JSON file keyed by split (default: train).",
        rich_help_panel=_PANEL,
    ),
]
EvalSplitOption = Annotated[
    Optional[str],
    typer.Option(
        "--eval-split",
        help="Split for --eval-data when it is a hub dataset or keyed by split (default: validation).",
        rich_help_panel=_PANEL,
    ),
]
SourceColumnOption = Annotated[
    Optional[str],
    typer.Option(
        "--source-column",
        help="Column holding the input text (default: the first of source, input, text, document, "
        "dialogue, article, ... that exists).",
        rich_help_panel=_PANEL,
    ),
]
TargetColumnOption = Annotated[
    Optional[str],
    typer.Option(
        "--target-column",
        help="Column holding the reference text, or a list of references (training uses the first) "
        "(default: the first of target, summary, output, highlights, answer, ... that exists).",
        rich_help_panel=_PANEL,
    ),
]
SourceTemplateOption = Annotated[
    Optional[str],
    typer.Option(
        "--source-template",
        help="Build the input from several columns, e.g. 'question: {Question} context: {Tweet}' "
        "(instead of --source-column).",
        rich_help_panel=_PANEL,
    ),
]
SourcePrefixOption = Annotated[
    str,
    typer.Option(
        "--source-prefix",
        help="Text put before every input, e.g. 'summarize: ' for T5.",
        rich_help_panel=_PANEL,
    ),
]
SourceLangOption = Annotated[
    Optional[str],
    typer.Option(
        "--source-lang",
        help="Language of the inputs: the data's column (or translation entry) of that name where no "
        "--source-column is given, and the tokenizer's source code (NLLB eng_Latn, mBART-50 en_XX, M2M100 en).",
        rich_help_panel=_PANEL,
    ),
]
TargetLangOption = Annotated[
    Optional[str],
    typer.Option(
        "--target-lang",
        help="Language of the outputs: the references' column or translation entry, the tokenizer's target "
        "code, forced as the first generated token (Marian multilingual: >>lang<< before every input).",
        rich_help_panel=_PANEL,
    ),
]
MaxSourceLengthOption = Annotated[
    int,
    typer.Option(
        "--max-source-length",
        min=1,
        help="Longest input in tokens; longer inputs are truncated (the paper: 512).",
        rich_help_panel=_PANEL,
    ),
]
MaxTargetLengthOption = Annotated[
    int,
    typer.Option(
        "--max-target-length",
        min=1,
        help="Longest target in tokens; longer targets are truncated (the paper: 128).",
        rich_help_panel=_PANEL,
    ),
]
LimitOption = Annotated[
    Optional[int],
    typer.Option(
        "--limit",
        min=1,
        help="Use only the first N examples (quick runs).",
        rich_help_panel=_PANEL,
    ),
]
VocabMapOption = Annotated[
    bool,
    typer.Option(
        "--vocab-map/--no-vocab-map",
        help="Decode a CTranslate2 export that has a vocabulary map (nash export --vocab-map) with it; "
        "--no-vocab-map: over the whole vocabulary.",
    ),
]

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
ThreadsOption = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch (and CTranslate2) (default: OMP_NUM_THREADS, else one per core); "
        "on a machine shared with other jobs, 1 per job.",
        rich_help_panel=RUN,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]

OutputDirOption = Annotated[Path, typer.Option("--output", "-o", help="Directory to write the result to.")]
