"""Data options shared by `distill`, `prune-encoder`, `eval` and `bench`, declared once.

Each alias is a `typing.Annotated` type carrying its Typer option, so every command that reads
data spells and documents the flags identically:

    def command(data: DataOption, split: SplitOption = None, limit: LimitOption = None, ...):

The matching library call is `nash_cli.data.load_examples(data, split=split, ...)`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

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

#: Defaults to pair with the aliases above, so commands agree on them too.
DEFAULT_SOURCE_PREFIX = ""
DEFAULT_MAX_SOURCE_LENGTH = 512
DEFAULT_MAX_TARGET_LENGTH = 128
