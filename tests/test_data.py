"""Data loading (every format, column choice, every bad input) and the training-side batching."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import pytest
from conftest import assert_user_error, make_unreadable, snapshot

from nash_cli.data import (
    DataOptions,
    Example,
    Features,
    InputReading,
    Seq2SeqCollator,
    check_data_source,
    load_examples,
    local_data_path,
    read_examples,
    tokenize_examples,
)
from nash_cli.errors import NashError

RECORDS = [
    {"document": "the cat sat", "summary": "cat sat", "id": 1},
    {"document": "the dog ran", "summary": "dog ran", "id": 2},
    {"document": "a fox jumps", "summary": "fox jumps", "id": 3},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_json_array_and_data_key_and_split_key(tmp_path):
    array = tmp_path / "a.json"
    array.write_text(json.dumps(RECORDS))
    wrapped = tmp_path / "b.json"
    wrapped.write_text(json.dumps({"data": RECORDS}))
    keyed = tmp_path / "c.json"
    keyed.write_text(json.dumps({"train": RECORDS, "validation": RECORDS[:1]}))
    expected = [Example("the cat sat", ["cat sat"]), Example("the dog ran", ["dog ran"]), Example("a fox jumps", ["fox jumps"])]
    assert load_examples(str(array)) == expected
    assert load_examples(str(wrapped)) == expected
    assert load_examples(str(keyed)) == expected
    assert load_examples(str(keyed), split="validation") == expected[:1]


def test_jsonl_csv_tsv_parquet_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    write_jsonl(tmp_path / "lines.json", RECORDS)
    with (tmp_path / "d.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["document", "summary", "id"])
        writer.writeheader()
        writer.writerows(RECORDS)
    with (tmp_path / "d.tsv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["document", "summary", "id"], delimiter="\t")
        writer.writeheader()
        writer.writerows(RECORDS)
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    reference = load_examples(str(jsonl))
    assert len(reference) == 3
    for name in ("lines.json", "d.csv", "d.tsv", "d.parquet"):
        assert load_examples(str(tmp_path / name)) == reference, name


def test_saved_dataset_directory(tmp_path):
    import datasets

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(RECORDS), "validation": datasets.Dataset.from_list(RECORDS[:2])}
    ).save_to_disk(str(tmp_path / "saved"))
    assert len(load_examples(str(tmp_path / "saved"))) == 3
    assert len(load_examples(str(tmp_path / "saved"), split="validation")) == 2
    with pytest.raises(NashError, match="no split 'test'.*'train', 'validation'"):
        load_examples(str(tmp_path / "saved"), split="test")


def test_columns_template_prefix_limit_and_references(tmp_path):
    records = [
        {"Question": "who won", "Tweet": "bob won the race", "Answer": ["bob", "bob!"]},
        {"Question": "what", "Tweet": "a thing", "Answer": "thing"},
    ]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(records))
    examples = load_examples(
        str(path), source_template="question: {Question} context: {Tweet}", source_prefix="qa: "
    )
    # "Answer" is found ignoring case; a list gives several references.
    assert examples == [
        Example("qa: question: who won context: bob won the race", ["bob", "bob!"]),
        Example("qa: question: what context: a thing", ["thing"]),
    ]
    assert load_examples(str(path), source_column="Tweet", target_column="Question", limit=1) == [
        Example("bob won the race", ["who won"])
    ]


def test_unlabeled_data_has_empty_references_unless_required(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"text": "hello there"}, {"text": "bye"}])
    assert load_examples(str(path)) == [Example("hello there", []), Example("bye", [])]
    with pytest.raises(NashError, match="no obvious target column.*'text'.*--target-column"):
        load_examples(str(path), require_references=True)
    partial = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "target": "b"}, {"text": "c", "target": None}])
    with pytest.raises(NashError, match="record 2 has no 'target' value"):
        load_examples(str(partial), require_references=True)


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "message"),
    [
        ("missing.jsonl", None, {}, "does not exist"),
        ("empty.jsonl", "", {}, "is empty"),
        ("blank.json", "  \n", {}, "is empty"),
        ("empty.csv", "", {}, "is empty"),
        ("bad.jsonl", '{"document": "a", "summary": "b"}\n{"document": "c", \n', {}, "line 2 is not valid JSON"),
        ("scalar.jsonl", '{"document": "a", "summary": "b"}\n[1, 2]\n', {}, "line 2 is a JSON list"),
        ("bad.json", '[{"document": "a",\n "summary": }]', {}, r"not valid JSON \(line 2"),
        ("data.txt", "hello", {}, "unknown extension '.txt'"),
        ("ok.jsonl", None, {"source_column": "body"}, "no column 'body'; its columns are 'document', 'summary', 'id'"),
        ("ok.jsonl", None, {"target_column": "gold"}, "no column 'gold'"),
        ("ok.jsonl", None, {"source_template": "{document} {title}"}, "uses 'title'.*columns are 'document'"),
        ("ok.jsonl", None, {"source_template": "no fields"}, "uses no column"),
        ("ok.jsonl", None, {"source_template": "{}"}, "unnamed field"),
        ("ok.jsonl", None, {"source_template": "{document", "source_column": "id"}, "only one"),
        ("ok.jsonl", None, {"limit": 0}, "at least 1"),
        ("obj.json", '{"rows": []}', {}, "keys 'rows'"),
        ("nosrc.jsonl", '{"foo": "a", "bar": "b"}\n', {}, "no obvious source column; its columns are 'foo', 'bar'"),
    ],
)
def test_bad_inputs_raise_one_line(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    if name == "ok.jsonl":
        write_jsonl(path, RECORDS)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(NashError, match=message) as raised:
        load_examples(str(path), **kwargs)
    assert "\n" not in str(raised.value)


BOM = "\ufeff"


@pytest.mark.parametrize("name", ["bom.csv", "bom.tsv", "bom.json", "bom.jsonl"])
def test_a_byte_order_mark_does_not_rename_the_first_column(tmp_path, name):
    # Excel's "CSV UTF-8" starts the file with a byte-order mark; read as plain UTF-8 the first
    # column would be "\ufeffdocument" and the automatic column choice would miss it.
    path = tmp_path / name
    if name.endswith(".json"):
        text = json.dumps(RECORDS)
    elif name.endswith(".jsonl"):
        text = "".join(json.dumps(record) + "\n" for record in RECORDS)
    else:
        delimiter = "," if name.endswith(".csv") else "\t"
        text = delimiter.join(["document", "summary"]) + "\n"
        text += "".join(delimiter.join([r["document"], r["summary"]]) + "\n" for r in RECORDS)
    path.write_bytes((BOM + text).encode("utf-8"))
    examples = load_examples(str(path), source_column="document" if name.endswith("sv") else None, require_references=True)
    assert examples[0] == Example("the cat sat", ["cat sat"])
    assert load_examples(str(path)) == examples  # found by the automatic column choice too


def test_non_utf8_data_is_one_line_naming_the_file_and_the_fix(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("document,summary\ncaf\u00e9 cr\u00e8me,na\u00efve\n".encode("latin-1"))
    for check in (lambda: load_examples(str(latin1)), lambda: check_data_source(str(latin1))):
        with pytest.raises(NashError, match=r"latin1.csv is not UTF-8 text \(byte 0xe9 at offset 20\); save it as UTF-8") as raised:
            check()
        assert "\n" not in str(raised.value)


def _parquet(path, columns: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array(values) for values in columns.values()], names=list(columns)), path)
    return path


def test_binary_columns_are_decoded_as_utf8_text(tmp_path):
    # pyarrow gives a binary column as bytes; str() of them made the text "b'the cat sat'".
    path = _parquet(tmp_path / "binary.parquet", {"document": [b"the cat sat"], "summary": [[b"cat sat", b"a cat"]]})
    assert load_examples(str(path)) == [Example("the cat sat", ["cat sat", "a cat"])]
    path = _parquet(tmp_path / "template.parquet", {"q": [b"why"], "c": ["because"], "image": [b"\x89PNG\xff"]})
    # A column the template does not use may hold any bytes.
    assert load_examples(str(path), source_template="{q} {c}") == [Example("why because", [])]

    import datasets

    datasets.Dataset.from_dict({"document": [b"the dog ran"], "summary": [b"dog ran"]}).save_to_disk(str(tmp_path / "saved"))
    assert load_examples(str(tmp_path / "saved")) == [Example("the dog ran", ["dog ran"])]


# Valid but unusual data: each is one line naming the file (and the line, record or column),
# never a traceback, and never silently read as something else.
UNUSUAL = {
    "surrogate.json": ('[{"document": "a \\ud800 b", "summary": "x"}]', "record 1: column 'document' holds a lone surrogate"),
    "surrogate.jsonl": ('{"document": "a", "summary": "x \\udfff"}\n', "record 1: column 'summary' holds a lone surrogate"),
    "deep.json": ('[{"document": "a", "summary": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}]", "deep.json nests"),
    "deep.jsonl": ('{"document": "a", "summary": "b"}\n{"x": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "deep.jsonl line 2 nests"),
    "bigint.json": ('[{"document": "a", "summary": ' + "7" * 5000 + "}]", "bigint.json holds an integer longer than Python reads"),
    "bigint.jsonl": ('{"document": "a", "summary": ' + "7" * 5000 + "}\n", "bigint.jsonl line 1 holds an integer"),
    "twice.json": ('[{"document": "a", "summary": "b", "summary": "c"}]', "naming the key 'summary' twice"),
    "twice.jsonl": ('{"document": "a", "summary": "b"}\n{"document": "a", "document": "c"}\n', "line 2 has an object naming the key 'document' twice"),
    "ragged.csv": ("document,summary\nthe cat,cat\nthe cat, the dog,cat\n", "ragged.csv line 3 has 3 fields but the header has 2"),
    "ragged.tsv": ("document\tsummary\nthe cat\tcat\tmore\n", "line 2 has 3 fields but the header has 2; quote fields that hold a tab"),
    "twice.csv": ("document,summary,summary\nthe cat,cat,dog\n", "twice.csv has two columns named 'summary'"),
    "twice.tsv": ("summary\tdocument\tsummary\nthe cat\tcat\tdog\n", "twice.tsv has two columns named 'summary'"),
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_unusual_data_is_one_line(tmp_path, name):
    content, message = UNUSUAL[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    with pytest.raises(NashError, match=message.replace("(", r"\(").replace("[", r"\[")) as raised:
        load_examples(str(path), require_references=True)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300


def test_unusual_parquet_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _parquet(tmp_path / "latin1.parquet", {"document": ["caf\u00e9".encode("latin-1")], "summary": ["x"]})
    with pytest.raises(NashError, match="record 1: column 'document' holds bytes that are not UTF-8 text"):
        load_examples(str(path))
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["summary", "summary"]), twice)
    with pytest.raises(NashError, match="twice.parquet has two columns named 'summary'"):
        load_examples(str(twice))


def test_csv_long_fields_and_trailing_empty_columns_are_read(tmp_path):
    # csv refuses a field over 128 KiB by default; a long document in one cell is data.
    import csv as csv_module

    path = tmp_path / "long.csv"
    path.write_text("document,summary\n" + "word " * 40_000 + ",short\n")
    spreadsheet = tmp_path / "spreadsheet.csv"  # trailing empty columns and fields: nothing lost, read
    spreadsheet.write_text("document,summary,,\nthe cat,cat,,\nthe dog,dog,,,\n")
    assert load_examples(str(spreadsheet)) == [Example("the cat", ["cat"]), Example("the dog", ["dog"])]
    limit = csv_module.field_size_limit()
    assert load_examples(str(path))[0].references == ["short"]
    assert csv_module.field_size_limit() == limit  # the process-wide limit is put back


@pytest.mark.parametrize("name", ["surrogate.jsonl", "deep.json", "bigint.jsonl", "ragged.csv", "twice.csv", "binary.parquet"])
def test_unusual_data_through_the_cli_exits_2_and_writes_nothing(make_checkpoint, cli, tmp_path, name):
    checkpoint = make_checkpoint("t5")
    path = tmp_path / name
    if name == "binary.parquet":
        _parquet(path, {"document": [b"\xffcat"], "summary": ["cat"]})
        message = "holds bytes that are not UTF-8 text"
    else:
        content, message = UNUSUAL[name]
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    before = snapshot(tmp_path)
    assert_user_error(cli("eval", checkpoint, "--data", path, "-o", tmp_path / "out" / "metrics.json"), message)
    assert_user_error(
        cli("distill", checkpoint, "--teacher", checkpoint, "--data", path, "--max-steps", "1", "-o", tmp_path / "student"),
        message,
    )
    assert snapshot(tmp_path) == before


def test_unreadable_data_file_is_one_line(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "secret.jsonl", RECORDS)
    make_unreadable(path, monkeypatch, method="open")
    try:
        for check in (lambda: load_examples(str(path)), lambda: check_data_source(str(path))):
            with pytest.raises(NashError, match="cannot read data file .*secret.jsonl .*Permission denied.*permissions"):
                check()
    finally:
        path.chmod(0o644)


def test_check_data_source_refuses_what_load_examples_would(tmp_path):
    write_jsonl(tmp_path / "ok.jsonl", RECORDS)
    (tmp_path / "folder").mkdir()
    (tmp_path / "data.txt").write_text("hello")
    check_data_source(str(tmp_path / "ok.jsonl"))
    check_data_source("org/some-dataset")  # a hub name: not checked offline
    for data, message in (
        (tmp_path / "missing.jsonl", "--data .*missing.jsonl does not exist"),
        (tmp_path / "missing" / "dir", "does not exist"),
        (tmp_path / "folder", "is a directory but not a saved dataset"),
        (tmp_path / "data.txt", "unknown extension '.txt'"),
    ):
        with pytest.raises(NashError, match=message):
            check_data_source(str(data))


@dataclass(kw_only=True)
class InputsOnly(InputReading):
    """A stage that reads inputs only (as bench does)."""

    data: str


def test_read_examples_reads_the_data_and_the_held_out_data_at_their_default_splits(tmp_path):
    keyed = tmp_path / "keyed.json"
    keyed.write_text(json.dumps({"train": RECORDS, "validation": RECORDS[:1], "test": RECORDS[2:]}))

    def sources(examples):
        return [example.source for example in examples]

    options = DataOptions(data=str(keyed), eval_data=str(keyed))
    assert sources(read_examples(options)) == sources(load_examples(str(keyed))) == [r["document"] for r in RECORDS]
    assert sources(read_examples(options, "eval")) == ["the cat sat"]  # validation, not train
    assert read_examples(DataOptions(data=str(keyed)), "eval") is None
    chosen = DataOptions(data=str(keyed), split="test", eval_data=str(keyed), eval_split="test", source_prefix="s: ",
                         target_column="id", source_template="{document}!")
    (example,) = read_examples(chosen)
    assert example == Example(source="s: a fox jumps!", references=["3"])
    assert read_examples(chosen, "eval") == [example]
    assert len(read_examples(options, limit=2)) == 2
    # `data` stands for a stage's own name for its data (export's vocab_map)
    assert sources(read_examples(options, data=str(write_jsonl(tmp_path / "other.jsonl", RECORDS[1:2])))) == ["the dog ran"]
    # a stage without a target column option reads the default one, as load_examples does
    assert read_examples(InputsOnly(data=str(keyed)))[0].references == ["cat sat"]


def test_data_option_groups_check_their_fields():
    for options, message in (
        (DataOptions(data="d", max_source_length=0), "--max-source-length must be at least 1, got 0"),
        (DataOptions(data="d", max_target_length=0), "--max-target-length must be at least 1, got 0"),
        (DataOptions(data="d", limit=0), "--limit must be at least 1, got 0"),
        (DataOptions(data="d", source_column="a", source_template="{a}"), "--source-template and --source-column"),
        (InputsOnly(data="d", source_column="a", source_template="{a}"), "--source-template and --source-column"),
    ):
        with pytest.raises(NashError, match=message):
            options.check()
    DataOptions(data="d", limit=1).check()


def test_local_paths_and_hub_names():
    assert local_data_path("samsum") is None
    assert local_data_path("ucsbnlp/tweet_qa") is None
    assert local_data_path("abisee/cnn_dailymail:3.0.0") is None
    for local in ("train.jsonl", "./train", "data/sets/train", "/abs/train", "~/train"):
        assert local_data_path(local) is not None, local


def test_hub_name_offline_is_a_clear_error():
    # The test suite runs offline (conftest), so a hub name must fail with a NashError, not a traceback.
    with pytest.raises(NashError, match="could not load dataset 'no-such-dataset-xyz'"):
        load_examples("no-such-dataset-xyz")
    # "org/name" is a hub name too (most hub datasets have an owner), not a missing local path
    with pytest.raises(NashError, match="could not load dataset 'no-such-org/no-such-dataset-xyz:cfg'"):
        load_examples("no-such-org/no-such-dataset-xyz:cfg")


def test_tweetqa_from_shared(shared_dir):
    path = shared_dir / "data" / "tweetqa" / "tweetqa_dev.json"
    examples = load_examples(str(path), source_template="question: {Question} context: {Tweet}", limit=5)
    assert len(examples) == 5
    assert all(example.source.startswith("question: ") and example.references for example in examples)


def test_tokenize_and_collate_pad_labels_with_minus_100(tokenizer):
    examples = [Example("the cat sat on the mat", ["the cat"]), Example("the dog", ["a dog sat on the mat"])]
    features = tokenize_examples(examples, tokenizer, max_source_length=4, max_target_length=16)
    assert len(features[0].input_ids) == 4  # truncated
    assert features[0].labels[-1] == tokenizer.eos_token_id
    batch = Seq2SeqCollator(pad_token_id=tokenizer.pad_token_id)(features)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["labels"].shape == (2, len(features[1].labels))
    short = len(features[0].labels)
    assert (batch["labels"][0, short:] == -100).all() and (batch["labels"][0, :short] >= 0).all()
    assert batch["attention_mask"][1].tolist() == [1] * len(features[1].input_ids) + [0] * (4 - len(features[1].input_ids))
    assert (batch["input_ids"][1, len(features[1].input_ids) :] == tokenizer.pad_token_id).all()


def test_tokenize_requires_references(tokenizer):
    with pytest.raises(NashError, match="example 2 has no target"):
        tokenize_examples([Example("a", ["b"]), Example("c", [])], tokenizer)


def test_collator_types():
    batch = Seq2SeqCollator(pad_token_id=0)([Features([5, 6, 1], [7, 1]), Features([5, 1], [7, 8, 9, 1])])
    assert batch["input_ids"].tolist() == [[5, 6, 1], [5, 1, 0]]
    assert batch["labels"].tolist() == [[7, 1, -100, -100], [7, 8, 9, 1]]


def test_template_lookups_reach_inside_lists_and_objects(tmp_path):
    # `{answers[0]}` indexed the joined text ("a", the first letter); `{meta.title}` was a traceback.
    path = tmp_path / "nested.json"
    path.write_text(json.dumps([{"answers": ["abc", "def"], "meta": {"title": "T"}, "score": 0.5, "summary": "s"}]))
    assert load_examples(str(path), source_template="{answers[1]} {meta.title} {meta[title]} {score:.2f} {answers}")[
        0
    ].source == "def T T 0.50 abc def"
    for template, message in (
        ("{answers[5]}", "record 1: 'answers' has 2 items, no \\[5\\]"),
        ("{meta.nope}", "record 1: 'meta' has no key 'nope'.*its keys are 'title'"),
        ("{summary[0]}", "record 1: 'summary' is a str, which has no \\[0\\]"),
        ("{summary:d}", "record 1: --source-template cannot format it"),
    ):
        with pytest.raises(NashError, match=message):
            load_examples(str(path), source_template=template)


def test_a_pipe_is_named_not_called_missing(tmp_path):
    """`--data <(cat f)` hands nash /dev/fd/N, a pipe: it said "does not exist"."""
    import os

    pipe = tmp_path / "data.jsonl"
    os.mkfifo(pipe)
    for call in (lambda: check_data_source(str(pipe)), lambda: load_examples(str(pipe))):
        with pytest.raises(NashError, match="is a pipe or a device, not a regular file"):
            call()
