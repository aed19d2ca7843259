"""Metrics equal the reference libraries on the same strings; WordNet is found or prepared offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import no_wordnet
from nash_cli import wordnet as wn
from nash_cli.errors import NashError
from nash_cli.metrics import check_metrics, compute_metrics, normalize_answer, tokenize

PREDICTIONS = [
    "the cats were sitting on the mat",
    "Bob brings the slides.\nAlice brings coffee.",
    "The meeting moved to Friday",
    "positive",
]
REFERENCES = [
    ["a cat sat on the mat", "the cat is sitting on a mat"],
    ["Alice will bring coffee.\nBob will bring the slides."],
    ["the meeting is moved to friday at noon", "meeting moved to Friday!"],
    ["negative", " positive "],
]


def test_rouge_equals_rouge_score_with_the_best_reference():
    from rouge_score.rouge_scorer import RougeScorer

    result = compute_metrics(PREDICTIONS, REFERENCES, ["rouge"])
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        expected = [
            max(scorer.score(ref, pred)[name].fmeasure for ref in refs)
            for pred, refs in zip(PREDICTIONS, REFERENCES)
        ]
        assert result.per_example[name] == pytest.approx(expected, abs=1e-12)
        assert result.scores[name] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    # The best reference matters: the first reference alone scores lower on example 0.
    first_only = scorer.score(REFERENCES[0][0], PREDICTIONS[0])["rouge1"].fmeasure
    assert result.per_example["rouge1"][0] > first_only
    # Lsum splits on newlines: it beats plain L when sentences are reordered.
    assert result.per_example["rougeLsum"][1] > result.per_example["rougeL"][1]


def test_bleu_and_chrf_equal_sacrebleu_as_fractions_with_the_signature():
    import sacrebleu

    predictions = ["the cat sat on the mat today", "a meeting is moved to friday at noon"]
    references = [["the cat sat on the mat", "a cat sat on a mat today"], ["the meeting is moved to friday at noon"]]
    result = compute_metrics(predictions, references, ["bleu", "chrf"])
    # sacrebleu's reference streams: a second reference for the first example only (None: none).
    streams = [[references[0][0], references[1][0]], [references[0][1], None]]
    bleu = sacrebleu.corpus_bleu(predictions, streams)
    chrf = sacrebleu.corpus_chrf(predictions, streams)
    assert bleu.score > 30
    assert result.scores["bleu"] == pytest.approx(bleu.score / 100, abs=1e-12)
    assert result.scores["chrf"] == pytest.approx(chrf.score / 100, abs=1e-12)
    assert "bleu" not in result.per_example and "chrf" not in result.per_example  # corpus-level
    assert result.signatures["bleu"] == f"nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert result.signatures["chrf"].startswith("nrefs:var|case:mixed|eff:yes|nc:6|nw:0|space:no|")
    assert compute_metrics(["a b"], [["a b"]], ["bleu"]).signatures["bleu"].startswith("nrefs:1|")


@pytest.mark.filterwarnings("ignore:\nThe hypothesis contains 0 counts")
def test_bleu_is_not_the_old_nltk_bleu():
    # What docs/eval.md says changed: nltk's corpus_bleu without smoothing gave (about) 0 to a corpus
    # with no matching 4-gram, and split "3.5" into three wordpunct tokens; sacrebleu smooths and keeps 13a's "3.5".
    from nltk.translate.bleu_score import corpus_bleu

    import sacrebleu

    predictions, references = ["a cat sat on the mat"], [["the cat sat on a mat"]]
    old = corpus_bleu([[tokenize(r) for r in refs] for refs in references], [tokenize(p) for p in predictions])
    new = compute_metrics(predictions, references, ["bleu"]).scores["bleu"]
    assert old < 1e-12  # nltk's "zero" (it puts the smallest float in for no match)
    assert new == pytest.approx(sacrebleu.corpus_bleu(predictions, [references[0]]).score / 100) and new > 0.2
    assert sacrebleu.BLEU().corpus_score(["it's 3.5"], [["it's 3.5"]]).sys_len == 2 and len(tokenize("it's 3.5")) == 6


def test_exact_match_and_accuracy():
    result = compute_metrics(PREDICTIONS, REFERENCES, ["exact_match", "accuracy"])
    # EM normalises case, punctuation and articles: example 2 matches its second reference.
    assert result.per_example["exact_match"] == [0.0, 0.0, 1.0, 1.0]
    # Accuracy only strips surrounding whitespace: the label must be generated as is.
    assert result.per_example["accuracy"] == [0.0, 0.0, 0.0, 1.0]
    assert result.scores["exact_match"] == 0.5 and result.scores["accuracy"] == 0.25
    assert normalize_answer("The  Meeting, moved!") == "meeting moved"


def test_metric_names_and_bad_inputs():
    assert check_metrics(["ROUGE", "em", "exact-match", "acc"]) == ["rouge", "exact_match", "accuracy"]
    with pytest.raises(NashError, match="unknown metric 'sacrebleu'"):
        check_metrics(["sacrebleu"])
    with pytest.raises(NashError, match="needs a list of one or more references"):
        compute_metrics(["x"], [[]], ["rouge"])
    with pytest.raises(NashError, match="1 predictions but 2"):
        compute_metrics(["x"], [["x"], ["y"]], ["rouge"])


# --------------------------------------------------------------------------- WordNet / METEOR


@pytest.fixture(scope="session")
def wordnet_cache(tmp_path_factory):
    """A private NASH_CACHE, so the test prepares WordNet itself instead of reusing ~/.cache."""
    # One directory for the session (test_eval uses it too), so WordNet is read once.
    return tmp_path_factory.getbasetemp() / "nash-cache"


@pytest.fixture
def wordnet_reader(wordnet_cache, monkeypatch):
    monkeypatch.setenv("NASH_CACHE", str(wordnet_cache))
    try:
        return wn.load_wordnet()
    except NashError as error:
        no_wordnet(f"no WordNet on this machine: {error}")


def test_meteor_equals_nltk_with_the_same_wordnet(wordnet_reader):
    from nltk.translate.meteor_score import meteor_score

    result = compute_metrics(PREDICTIONS, REFERENCES, ["meteor"])
    expected = [
        meteor_score([tokenize(r) for r in refs], tokenize(pred), wordnet=wordnet_reader)
        for pred, refs in zip(PREDICTIONS, REFERENCES)
    ]
    assert result.per_example["meteor"] == pytest.approx(expected, abs=1e-12)
    # nltk's own documented example; synonyms (WordNet) are part of it.
    hypothesis = "It is a guide to action which ensures that the military always obeys the commands of the party"
    reference = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert round(meteor_score([reference.split()], hypothesis.split(), wordnet=wordnet_reader), 4) == 0.6944
    # Multi-reference: the best one counts.
    single = [meteor_score([tokenize(r)], tokenize(PREDICTIONS[0]), wordnet=wordnet_reader) for r in REFERENCES[0]]
    assert result.per_example["meteor"][0] == pytest.approx(max(single))
    assert wordnet_reader.synsets("dog")[0].lexname() == "noun.animal"


def test_wordnet_is_prepared_from_the_debian_layout(tmp_path):
    source = next((d for d in wn.system_wordnet_dirs() if (d / "index.sense").is_file()), None)
    if source is None:
        no_wordnet("no system WordNet (apt-get install wordnet-base wordnet-sense-index)")
    target = wn.prepare_wordnet(source, tmp_path / "nltk_data" / "corpora" / "wordnet")
    assert (target / "lexnames").read_text() == wn.lexnames_text()
    for name in wn.REQUIRED_FILES:
        assert (target / name).read_bytes() == (source / name).read_bytes(), name
        assert not (target / name).is_symlink()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_lexnames_table_is_wordnet_3_0():
    lines = wn.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"
    assert [int(line.split("\t")[0]) for line in lines] == list(range(45))


def test_lexnames_equals_the_shared_copy(shared_dir):
    path = shared_dir / "data" / "wordnet" / "lexnames"
    if not path.is_file():
        pytest.skip("shared lexnames absent")
    assert wn.lexnames_text() == path.read_text()


def test_a_wordnet_without_index_sense_is_refused(tmp_path):
    source = tmp_path / "wordnet"
    source.mkdir()
    for name in wn.REQUIRED_FILES:
        if name != "index.sense":
            (source / name).write_text("")
    with pytest.raises(NashError, match="index.sense.*wordnet-sense-index"):
        wn.prepare_wordnet(source, tmp_path / "out" / "wordnet")
    assert not (tmp_path / "out" / "wordnet").exists()


def test_no_wordnet_anywhere_says_how_to_get_it(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nowhere")])
    monkeypatch.setattr(wn, "SYSTEM_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setenv("NASH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(NashError) as raised:
        wn.load_wordnet()
    message = str(raised.value)
    assert "\n" not in message and "wordnet-base" in message and "nltk" in message
    assert not Path(tmp_path / "cache").exists()
