"""Data for every command that reads examples: loading, tokenisation and batching.

`load_examples` turns a local JSON / JSON Lines / CSV / TSV / Parquet file, a directory written
by `datasets.Dataset.save_to_disk`, or a dataset name on the Hugging Face Hub into a list of
`Example` (a source text and its reference texts). `distill`, `prune-encoder`, `eval` and `bench`
all read data through it, so they accept the same files and the same column options.

The training side (`tokenize_examples`, `Seq2SeqCollator`) turns examples into token ids and
pads batches dynamically, with label padding set to -100 so that padding never enters a loss.

| module     | holds                                                                       |
|------------|-----------------------------------------------------------------------------|
| `sources`  | reading records: file formats, saved datasets, the hub; `check_data_source` |
| `examples` | records to `Example`: columns, templates, references; `load_examples`       |
| `options`  | the data options of the stages (`DataOptions`)                              |
| `features` | tokenisation and collation (`tokenize_examples`, `Seq2SeqCollator`)         |

Importing this package does not import torch (only `features`' functions do, when called).
"""

from nash_cli.data.examples import SOURCE_COLUMNS, TARGET_COLUMNS, Example, load_examples
from nash_cli.data.features import IGNORE_INDEX, Features, Seq2SeqCollator, tokenize_examples
from nash_cli.data.options import DataOptions
from nash_cli.data.sources import EXTENSIONS, TEXT_ENCODING, check_data_source, local_data_path

__all__ = [
    "EXTENSIONS",
    "IGNORE_INDEX",
    "SOURCE_COLUMNS",
    "TARGET_COLUMNS",
    "TEXT_ENCODING",
    "DataOptions",
    "Example",
    "Features",
    "Seq2SeqCollator",
    "check_data_source",
    "load_examples",
    "local_data_path",
    "tokenize_examples",
]
