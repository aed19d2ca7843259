"""Quality metrics for generated text, computed by the reference libraries themselves.

Every metric takes `predictions: list[str]` and `references: list[list[str]]` (one or more
references per example) and returns the mean over examples plus the per-example values.

- ROUGE-1/2/L/Lsum: `rouge_score.RougeScorer(use_stemmer=True)`; F-measure. With several
  references, `RougeScorer.score_multi` keeps, per ROUGE type, the reference with the best
  F-measure. ROUGE-Lsum splits sentences on newlines (rouge_score's convention).
- METEOR: `nltk.translate.meteor_score.meteor_score` with WordNet (see `nash_cli.wordnet`);
  texts are split by `nltk.tokenize.wordpunct_tokenize` (needs no model files), lower-cased
  by nltk. With several references nltk itself keeps the best one.
- BLEU and chrF: sacrebleu's `BLEU()` and `CHRF()` with their defaults, corpus-level, as
  translation papers report them (BLEU: 13a tokenisation, exponential smoothing, case-sensitive;
  chrF: character 6-grams, beta 2). Corpus-level, so there is no per-example value; several
  references enter the way each defines it (BLEU: clipped counts over all references, closest
  reference length; chrF: the best reference per sentence), and the signature is kept
  (`MetricScores.signatures`) so a reader can tell which BLEU it is.
- exact_match: SQuAD normalisation (lower case, no punctuation, no articles a/an/the, single
  spaces) then equality; 1 if any reference matches.
- accuracy: classification as text-to-text: the prediction, stripped of surrounding
  whitespace, equals a reference stripped the same way; 1 if any reference matches.

Scores are fractions in [0, 1]: what the libraries return, with sacrebleu's 0-100 scores divided
by 100 (tables show every score x 100, so BLEU reads as sacrebleu prints it).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nash_cli.errors import NashError

#: Metric names accepted by `compute_metrics` (and `nash eval --metric`).
METRICS = ("rouge", "meteor", "bleu", "chrf", "exact_match", "accuracy")
#: Short names accepted for convenience.
ALIASES = {"em": "exact_match", "acc": "accuracy"}
#: The scores each metric produces.
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@dataclass
class MetricScores:
    """Scores of one set of predictions."""

    scores: dict[str, float] = field(default_factory=dict)
    """Mean over examples (corpus value for BLEU), by score name (rouge1, ..., meteor, bleu)."""
    per_example: dict[str, list[float]] = field(default_factory=dict)
    """Per-example values by score name, in input order (absent for corpus-level BLEU and chrF)."""
    signatures: dict[str, str] = field(default_factory=dict)
    """sacrebleu's signature of each of its scores (bleu, chrf): references, case, tokeniser,
    smoothing, version."""


def check_metrics(names: Sequence[str]) -> list[str]:
    """Validates metric names (case-insensitive, `-` same as `_`, `em` and `acc` accepted); returns
    them normalised and deduplicated.

    Raises:
        NashError: An unknown name.
    """
    result: list[str] = []
    for name in names:
        key = name.strip().lower().replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in METRICS:
            raise NashError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        if key not in result:
            result.append(key)
    return result


def tokenize(text: str) -> list[str]:
    """Words and punctuation runs, as METEOR sees a text (nltk's wordpunct_tokenize)."""
    from nltk.tokenize import wordpunct_tokenize

    return wordpunct_tokenize(text)


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """ROUGE-1/2/L/Lsum F-measures via rouge_score (stemming on), best reference per example."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per_example: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES}
    for prediction, refs in zip(predictions, references):
        best = scorer.score_multi(list(refs), prediction)
        for name in ROUGE_TYPES:
            per_example[name].append(float(best[name].fmeasure))
    return _mean_of(per_example)


def meteor(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """METEOR via nltk on wordpunct tokens; nltk keeps the best reference per example.

    Raises:
        NashError: WordNet is not available (the message says how to get it).
    """
    from nltk.translate.meteor_score import meteor_score

    from nash_cli.wordnet import load_wordnet

    wordnet = load_wordnet()
    values = [
        float(meteor_score([tokenize(ref) for ref in refs], tokenize(prediction), wordnet=wordnet))
        for prediction, refs in zip(predictions, references)
    ]
    return _mean_of({"meteor": values})


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """References as sacrebleu takes them: one stream per reference position, None where an
    example has fewer references than the most (sacrebleu's way of varying their number)."""
    most = max((len(refs) for refs in references), default=0)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]


def bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """Corpus BLEU via sacrebleu's defaults (13a tokens, exp smoothing), as a fraction, with its signature."""
    from sacrebleu.metrics import BLEU

    return _sacrebleu("bleu", BLEU(), predictions, references)


def chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """Corpus chrF via sacrebleu's defaults (character 6-grams, beta 2), as a fraction, with its signature."""
    from sacrebleu.metrics import CHRF

    return _sacrebleu("chrf", CHRF(), predictions, references)


def _sacrebleu(name: str, metric, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    score = metric.corpus_score(list(predictions), reference_streams(references))
    return MetricScores(scores={name: float(score.score) / 100}, signatures={name: str(metric.get_signature())})


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """1 per example whose normalised prediction equals a normalised reference."""
    values = [
        float(any(normalize_answer(prediction) == normalize_answer(ref) for ref in refs))
        for prediction, refs in zip(predictions, references)
    ]
    return _mean_of({"exact_match": values})


def accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> MetricScores:
    """1 per example whose stripped prediction equals a stripped reference (labels as text)."""
    values = [
        float(any(prediction.strip() == ref.strip() for ref in refs))
        for prediction, refs in zip(predictions, references)
    ]
    return _mean_of({"accuracy": values})


_FUNCTIONS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], MetricScores]] = {
    "rouge": rouge,
    "meteor": meteor,
    "bleu": bleu,
    "chrf": chrf,
    "exact_match": exact_match,
    "accuracy": accuracy,
}


def compute_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str]], metrics: Sequence[str]
) -> MetricScores:
    """Computes each named metric (see `METRICS`) and merges their scores.

    Raises:
        NashError: Unknown metric, mismatched lengths, an example without a reference, or
            METEOR without WordNet.
    """
    names = check_metrics(metrics)
    if len(predictions) != len(references):
        raise NashError(f"{len(predictions)} predictions but {len(references)} reference lists")
    for index, refs in enumerate(references):
        if isinstance(refs, str) or len(refs) == 0:
            raise NashError(f"example {index} needs a list of one or more references")
    result = MetricScores()
    for name in names:
        part = _FUNCTIONS[name](predictions, references)
        result.scores.update(part.scores)
        result.per_example.update(part.per_example)
        result.signatures.update(part.signatures)
    return result


def _mean_of(per_example: dict[str, list[float]]) -> MetricScores:
    scores = {name: (sum(values) / len(values) if values else 0.0) for name, values in per_example.items()}
    return MetricScores(scores=scores, per_example=per_example)
