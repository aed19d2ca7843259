"""`nash eval`: generations and scores on disk, equal to the libraries called directly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import assert_user_error, no_wordnet, snapshot
from nash_cli.errors import NashError
from nash_cli.stages.eval import generations_path_for



RECORDS = [
    {"dialogue": "the quick brown fox jumps over the lazy dog .", "summary": ["fox jumps", "a fox jumped"]},
    {"dialogue": "a cat sat on the mat and looked at the dog .", "summary": ["cat on mat"]},
    {"dialogue": "bob will bring the slides and alice will bring coffee .", "summary": ["bob brings slides"]},
    {"dialogue": "one two three four five six seven eight nine ten .", "summary": ["numbers", "one to ten"]},
    {"dialogue": "the meeting is moved to friday at noon .", "summary": ["meeting friday"]},
]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    return path


@pytest.fixture
def bart(make_checkpoint):
    # The random toy BART emits ordinary tokens (a random T5 mostly emits pad), so predictions
    # are non-empty and the scores below are not all zeros by construction.
    return make_checkpoint("bart")


def test_eval_writes_metrics_and_complete_generations(bart, data, tmp_path, cli):
    import sacrebleu
    from rouge_score.rouge_scorer import RougeScorer

    from nash_cli.artifact import load_model, load_tokenizer
    from nash_cli.generation import generate_texts, resolve_settings

    out = tmp_path / "run" / "metrics.json"
    result = cli(
        "eval", bart, "--data", data, "--source-column", "dialogue", "--target-column", "summary",
        "-m", "rouge", "-m", "bleu", "-m", "chrf", "-m", "exact_match", "-m", "accuracy",
        "--batch", "2", "--beams", "2", "--max-new-tokens", "6", "-o", out, "--json",
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(out.read_text())
    assert result.json()["scores"] == document["scores"]
    assert document["num_examples"] == 5
    assert document["generation"]["num_beams"] == 2 and document["generation"]["max_new_tokens"] == 6
    assert document["generation"]["batch_size"] == 2
    assert document["references_per_example"] == {"min": 1, "max": 2}
    assert document["seconds"]["generation"] > 0
    assert set(document["scores"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match", "accuracy"}
    assert set(document["signatures"]) == {"bleu", "chrf"} and "tok:13a" in document["signatures"]["bleu"]
    printed = cli("eval", bart, "--data", data, "--source-column", "dialogue", "--target-column", "summary",
                  "-m", "bleu", "--limit", "1", "--max-new-tokens", "2").stdout
    assert "bleu signature (sacrebleu)" in printed and "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp" in printed

    lines = (tmp_path / "run" / "generations.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 5
    for index, (record, source) in enumerate(zip(records, RECORDS)):
        assert record["index"] == index
        assert record["source"] == source["dialogue"]
        assert record["references"] == source["summary"]
        assert isinstance(record["prediction"], str)
    predictions = [r["prediction"] for r in records]
    assert any(predictions)

    # The same generations straight from the library, one example at a time.
    model, tokenizer = load_model(bart), load_tokenizer(bart)
    settings = resolve_settings(model, num_beams=2, max_new_tokens=6)
    assert predictions == [
        generate_texts(model, tokenizer, [r["dialogue"]], settings, batch_size=1)[0] for r in RECORDS
    ]

    # The scores, recomputed by the libraries on the written strings.
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for name in ("rouge1", "rougeL"):
        per_example = [max(scorer.score(ref, r["prediction"])[name].fmeasure for ref in r["references"]) for r in records]
        assert [r["scores"][name] for r in records] == pytest.approx(per_example, abs=1e-12)
        assert document["scores"][name] == pytest.approx(sum(per_example) / 5, abs=1e-12)
    streams = [[r["references"][i] if i < len(r["references"]) else None for r in records] for i in range(2)]
    bleu = sacrebleu.corpus_bleu(predictions, streams).score / 100
    assert document["scores"]["bleu"] == pytest.approx(bleu, abs=1e-12)
    assert document["scores"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(predictions, streams).score / 100, abs=1e-12)
    assert document["scores"]["accuracy"] == sum(
        any(p.strip() == ref.strip() for ref in r["references"]) for p, r in zip(predictions, records)
    ) / 5

    # Existing outputs are refused without --force, and left as they were.
    before = out.read_text()
    again = cli("eval", bart, "--data", data, "--source-column", "dialogue", "--target-column", "summary", "-o", out)
    assert_user_error(again, "already exists", "--force")
    assert out.read_text() == before
    forced = cli(
        "eval", bart, "--data", data, "--source-column", "dialogue", "--target-column", "summary",
        "--limit", "2", "-o", out, "--force",
    )
    assert forced.exit_code == 0, forced.stderr
    assert json.loads(out.read_text())["num_examples"] == 2
    assert len((tmp_path / "run" / "generations.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["generations.jsonl", "metrics.json"]


def test_defaults_come_from_the_generation_config(bart, data, cli, tmp_path):
    import shutil

    from transformers import GenerationConfig

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(bart, checkpoint)
    config = GenerationConfig.from_pretrained(checkpoint)
    config.num_beams, config.max_length = 3, 7
    config.save_pretrained(checkpoint)
    result = cli("eval", checkpoint, "--data", data, "--target-column", "summary", "--json")
    assert result.exit_code == 0, result.stderr
    generation = result.json()["generation"]
    assert (generation["num_beams"], generation["max_new_tokens"]) == (3, 6)  # max_length counts the start token
    assert set(result.json()["scores"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}  # rouge by default
    assert snapshot(tmp_path) == {"val.jsonl"} | {f"ckpt/{p.name}" for p in checkpoint.iterdir()} | {"ckpt"}


def test_generations_path_beside_the_metrics():
    assert generations_path_for(Path("out/metrics.json")) == Path("out/generations.jsonl")
    assert generations_path_for(Path("out/flan.json")) == Path("out/flan.generations.jsonl")



def test_an_output_directory_gets_metrics_and_generations_inside(bart, data, tmp_path, cli):
    # `-o results/` wrote a file named "results"; an existing directory was refused as an
    # existing output. Both are directories: metrics.json and generations.jsonl go inside.
    common = ["eval", bart, "--data", data, "--target-column", "summary", "--limit", "2"]
    result = cli(*common, "-o", f"{tmp_path / 'new'}/")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["generations.jsonl", "metrics.json"]
    (tmp_path / "existing").mkdir()
    result = cli(*common, "-o", tmp_path / "existing", "--generations", f"{tmp_path / 'gens'}/")
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in (tmp_path / "existing").iterdir()] == ["metrics.json"]
    assert [p.name for p in (tmp_path / "gens").iterdir()] == ["generations.jsonl"]
    # The files inside are outputs like any other: a second run needs --force.
    before = snapshot(tmp_path)
    assert_user_error(cli(*common, "-o", f"{tmp_path / 'new'}/"), "already exists", "--force")
    assert snapshot(tmp_path) == before

@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--metric", "sacrebleu"], "unknown metric"),
        (["--batch", "0"], "--batch"),
        (["--beams", "0"], "--beams"),
        (["--target-column", "nope"], "nope"),
        (["--device", "tpu"], "--device"),
        (["--generations", "g.jsonl"], "--generations goes with --output"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(bart, data, tmp_path, cli, args, fragment):
    result = cli("eval", bart, "--data", data, "--source-column", "dialogue", *args)
    assert_user_error(result, fragment)
    assert snapshot(tmp_path) == {"val.jsonl"}


def test_missing_data_and_model(bart, data, tmp_path, cli):
    assert_user_error(cli("eval", bart, "--data", tmp_path / "none.jsonl", "-o", tmp_path / "m.json"), "none.jsonl")
    assert_user_error(cli("eval", tmp_path / "nomodel", "--data", data, "--target-column", "summary"), "nomodel")
    assert not (tmp_path / "m.json").exists()


def test_meteor_without_wordnet_fails_before_generating(bart, data, tmp_path, cli, monkeypatch):
    import nltk

    from nash_cli import wordnet

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nowhere")])
    monkeypatch.setattr(wordnet, "SYSTEM_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setenv("NASH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("nash_cli.generation.generate_texts", _must_not_run)
    result = cli("eval", bart, "--data", data, "--target-column", "summary", "-m", "meteor", "-o", tmp_path / "m.json")
    assert_user_error(result, "WordNet", "wordnet-base")
    assert snapshot(tmp_path) == {"val.jsonl"}


def _must_not_run(*args, **kwargs):
    raise AssertionError("generation ran although METEOR could not be computed")


def _wordnet_or_skip(monkeypatch, cache: Path):
    from nash_cli.wordnet import load_wordnet

    monkeypatch.setenv("NASH_CACHE", str(cache))
    try:
        return load_wordnet()
    except NashError as error:
        no_wordnet(f"no WordNet on this machine: {error}")


def test_tweetqa_shaped_data_with_meteor(shared_dir, tmp_path, cli, monkeypatch, tmp_path_factory):
    """Real TweetQA records and the real T5 vocabulary: two references each, METEOR and ROUGE."""
    from nltk.translate.meteor_score import meteor_score
    from transformers import AutoTokenizer

    from nash_cli.metrics import tokenize
    from nash_cli.toy import tiny_model

    dev = shared_dir / "data" / "tweetqa" / "tweetqa_dev.json"
    vocab = shared_dir / "data" / "t5-vocab"
    if not dev.is_file() or not vocab.is_dir():
        pytest.skip("TweetQA or the T5 vocabulary is absent from shared/")
    reader = _wordnet_or_skip(monkeypatch, tmp_path_factory.getbasetemp() / "nash-cache")
    records = json.loads(dev.read_text())[:4]
    data = tmp_path / "tweetqa_dev.json"
    data.write_text(json.dumps(records))
    checkpoint = tmp_path / "t5"
    tokenizer = AutoTokenizer.from_pretrained(vocab)
    tiny_model("t5", vocab_size=len(tokenizer)).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)

    out = tmp_path / "metrics.json"
    result = cli(
        "eval", checkpoint, "--data", data, "--source-template", "question: {Question} context: {Tweet}",
        "--target-column", "Answer", "--metric", "meteor", "--metric", "rouge", "--max-new-tokens", "4",
        "--beams", "2", "-o", out,
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["num_examples"] == 4 and document["references_per_example"] == {"min": 2, "max": 2}
    generations = [json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert [g["source"] for g in generations] == [
        f"question: {r['Question']} context: {r['Tweet']}" for r in records
    ]
    assert [g["references"] for g in generations] == [r["Answer"] for r in records]
    expected = [
        meteor_score([tokenize(ref) for ref in g["references"]], tokenize(g["prediction"]), wordnet=reader)
        for g in generations
    ]
    assert document["scores"]["meteor"] == pytest.approx(sum(expected) / 4, abs=1e-12)
