"""The data options of the training stages (`DataOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

from nash_cli.errors import require_at_least


@dataclass(kw_only=True)
class DataOptions:
    """Where a training stage's examples come from and how to read them (the data flags).

    `eval` and `bench` take the source-side subset of these fields, with these defaults.
    """

    data: str
    """Training data: a local file or directory, or a hub dataset name."""
    split: str | None = None
    """Split of the training data (hub / saved DatasetDict / JSON keyed by split)."""
    eval_data: str | None = None
    """Held-out data, read with the same column options."""
    eval_split: str | None = None
    """Split of the eval data (default: "validation" where splits exist)."""
    source_column: str | None = None
    """Input column (default: a common name such as source / document / dialogue)."""
    target_column: str | None = None
    """Reference column (default: a common name such as target / summary / answer)."""
    source_template: str | None = None
    """Builds the input from several columns, e.g. "question: {Question} context: {Tweet}"."""
    source_prefix: str = ""
    """Text put before every input."""
    max_source_length: int = 512
    """Longest input in tokens (the paper: 512)."""
    max_target_length: int = 128
    """Longest target in tokens (the paper: 128)."""
    limit: int | None = None
    """Use only the first N training (and eval) examples."""

    def check(self) -> None:
        """NashError for an impossible length or limit."""
        for flag, value in (
            ("--max-source-length", self.max_source_length),
            ("--max-target-length", self.max_target_length),
            ("--limit", self.limit),
        ):
            require_at_least(flag, value)
