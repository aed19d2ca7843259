"""Data for every command that reads examples: loading, tokenisation and batching.

`load_examples` turns a local JSON / JSON Lines / CSV / TSV / Parquet file, a directory written
by `datasets.Dataset.save_to_disk`, or a dataset name on the Hugging Face Hub into a list of
`Example` (a source text and its reference texts). Every stage that reads examples reads them
through it, with `read_examples` and the option groups of `options`, so they accept the same
files and the same column options, and read the same splits.

The training side (`tokenize_examples`, `Seq2SeqCollator`) turns examples into token ids and
pads batches dynamically, with label padding set to -100 so that padding never enters a loss.

| module     | holds                                                                       |
|------------|-----------------------------------------------------------------------------|
| `sources`  | reading records: file formats, saved datasets, the hub; `check_data_source` |
| `examples` | records to `Example`: columns, templates, references; `load_examples`, and  |
|            | `read_examples` (a stage's examples, as its options say)                    |
| `options`  | the data options, declared once as groups the stages' options inherit       |
| `features` | tokenisation and collation (`tokenize_examples`, `Seq2SeqCollator`)         |
| `languages`| `--source-lang` / `--target-lang` set on a translation tokenizer           |
|            | (`set_languages`: codes, forced first token, Marian prefix; `LanguagePair`) |
|            | with the codes `arch.tokenizers.language_codes` finds                       |

Importing this package does not import torch (only `features`' functions do, when called).
"""

from nash_cli.data.examples import (
    DEFAULT_SPLITS,
    SOURCE_COLUMNS,
    TARGET_COLUMNS,
    TRANSLATION_FIELD,
    Example,
    language_column,
    load_examples,
    read_examples,
)
from nash_cli.data.features import IGNORE_INDEX, Features, Seq2SeqCollator, tokenize_examples
from nash_cli.data.languages import LanguageCodes, LanguagePair, language_codes, set_languages
from nash_cli.data.options import DataOptions, ExampleReading, HeldOutReading, InputReading, SourceLength
from nash_cli.data.sources import EXTENSIONS, TEXT_ENCODING, check_data_source, local_data_path

__all__ = [
    "DEFAULT_SPLITS",
    "EXTENSIONS",
    "IGNORE_INDEX",
    "SOURCE_COLUMNS",
    "TARGET_COLUMNS",
    "TEXT_ENCODING",
    "TRANSLATION_FIELD",
    "DataOptions",
    "Example",
    "ExampleReading",
    "Features",
    "HeldOutReading",
    "InputReading",
    "LanguageCodes",
    "LanguagePair",
    "Seq2SeqCollator",
    "SourceLength",
    "check_data_source",
    "language_codes",
    "language_column",
    "load_examples",
    "local_data_path",
    "read_examples",
    "set_languages",
    "tokenize_examples",
]
