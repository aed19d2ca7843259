"""The vocabulary surgery: kept ids, slicing, config ids, and exact tokenizer reduction.

Exactness is checked, not argued: a text whose original tokens are all kept must tokenise to the
same tokens (renumbered) with the reduced tokenizer, for a byte-level BPE trained here and for the
real T5 SentencePiece vocabulary in ../shared when present.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import CORPUS
from nash_cli.errors import NashError
from nash_cli.surgery import tokenizer as tokenizer_surgery
from nash_cli.surgery import vocab

#: Held-out texts: some reuse only training words, some bring new ones.
HELD_OUT = [
    "the dog sat on the mat .",
    "the fox looked at the cat .",
    "alice will bring the dog .",
    "a zebra quietly juggles seventeen xylophones !",
    "the meeting is at noon .",
    "bob sat on the slides .",
]


def _exactness(document, kept, texts):
    """(covered, exact): texts whose original ids are all kept, and those tokenised identically."""
    from tokenizers import Tokenizer

    original = Tokenizer.from_str(json.dumps(document))
    reduced = Tokenizer.from_str(json.dumps(tokenizer_surgery.reduce_tokenizer(document, kept)))
    mapping = vocab.id_map(kept)
    covered = exact = 0
    for text in texts:
        ids = original.encode(text, add_special_tokens=False).ids
        if set(ids) <= set(kept):
            covered += 1
            exact += reduced.encode(text, add_special_tokens=False).ids == [mapping[i] for i in ids]
    return covered, exact


def _chosen(document, texts):
    from tokenizers import Tokenizer

    original = Tokenizer.from_str(json.dumps(document))
    counts = vocab.count_tokens(original.encode(t, add_special_tokens=False).ids for t in texts)
    return vocab.choose_kept_ids(tokenizer_surgery.required_ids(document), counts)


def test_choose_kept_ids_and_min_count():
    counts = {10: 1, 11: 3, 12: 2}
    assert vocab.choose_kept_ids({0, 1}, counts) == [0, 1, 10, 11, 12]
    assert vocab.choose_kept_ids({0, 1}, counts, min_count=2) == [0, 1, 11, 12]
    assert vocab.id_map([0, 1, 11, 12]) == {0: 0, 1: 1, 11: 2, 12: 3}
    with pytest.raises(NashError, match="--min-count"):
        vocab.choose_kept_ids({0}, counts, min_count=0)


def test_merge_closure_keeps_every_way_to_build_a_token():
    merges = [("a", "b"), ("ab", "c"), ("b", "c"), ("a", "bc"), ("x", "y")]
    assert tokenizer_surgery.merge_closure({"abc"}, merges) == {"abc", "ab", "a", "b", "c", "bc"}
    assert tokenizer_surgery.merge_closure({"xy", "q"}, merges) == {"xy", "x", "y", "q"}


def _bpe_document(tokens, merges):
    return {"model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": [" ".join(m) for m in merges]}}


def test_fill_to_multiple_adds_whole_tokens_with_their_merge_parts():
    # ids: a0 b1 c2 x3 y4 ab5 abc6 xy7
    document = _bpe_document(["a", "b", "c", "x", "y", "ab", "abc", "xy"], [("a", "b"), ("ab", "c"), ("x", "y")])
    fill = tokenizer_surgery.fill_to_multiple
    assert fill(document, {0, 1, 2}, 1) == {0, 1, 2}
    assert fill(document, {0, 1, 2, 5}, 4) == {0, 1, 2, 5}  # already a multiple
    # the lowest ids first: x (3)
    assert fill(document, {0, 1, 2, 5, 6}, 2) == {0, 1, 2, 3, 5, 6}
    # the preferred first: "xy" needs x and y, three tokens, too many for one free place; "abc" fits
    assert fill(document, {0, 1, 2, 5}, 5, preferred=[7, 6]) == {0, 1, 2, 5, 6}
    assert fill(document, {0, 1, 2}, 6, preferred=[7]) == {0, 1, 2, 3, 4, 7}
    # never beyond the tokenizer, nor beyond `below`
    assert fill(document, {0}, 64) == set(range(8))
    assert fill(document, {0}, 64, below=3) == {0, 1, 2}


def test_fill_to_multiple_takes_any_token_of_a_unigram_or_wordlevel_model():
    unigram = {"model": {"type": "Unigram", "vocab": [[p, -float(i)] for i, p in enumerate("abcdefgh")], "unk_id": 0}}
    assert tokenizer_surgery.fill_to_multiple(unigram, {0, 5}, 4, preferred=[7]) == {0, 1, 5, 7}
    words = {"model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(["<unk>", "the", "cat", "sat"])}}}
    assert tokenizer_surgery.fill_to_multiple(words, {0, 3}, 3) == {0, 1, 3}


def test_slice_vocabulary_keeps_shared_tensors_shared():
    shared = torch.arange(12.0).reshape(6, 2)
    bias = torch.arange(6.0).reshape(1, 6)
    state = {"shared": shared, "head": shared, "bias": bias, "other": torch.ones(3)}
    out = vocab.slice_vocabulary(state, {"shared": 0, "head": 0, "bias": 1, "absent": 0}, [0, 2, 5])
    assert out["shared"] is out["head"]
    assert out["shared"].tolist() == [[0, 1], [4, 5], [10, 11]]
    assert out["bias"].tolist() == [[0, 2, 5]]
    assert out["other"] is state["other"]
    with pytest.raises(NashError, match="beyond"):
        vocab.slice_vocabulary(state, {"shared": 0}, [0, 6])


def test_renumber_config_maps_every_id():
    from transformers import BartConfig, GenerationConfig

    config = BartConfig(vocab_size=50, pad_token_id=1, eos_token_id=2, bos_token_id=0, decoder_start_token_id=2,
                        forced_bos_token_id=0, forced_eos_token_id=2)
    kept = [0, 1, 2, 7, 9]
    assert vocab.config_ids(config) >= {0, 1, 2}
    new = vocab.renumber_config(config, kept)
    assert new.vocab_size == 5 and config.vocab_size == 50
    assert (new.pad_token_id, new.eos_token_id, new.bos_token_id, new.decoder_start_token_id) == (1, 2, 0, 2)
    generation = GenerationConfig(eos_token_id=[2, 9], suppress_tokens=[7, 30], pad_token_id=1)
    new_generation = vocab.renumber_config(generation, kept, vocab_size=False)
    assert new_generation.eos_token_id == [2, 4] and new_generation.suppress_tokens == [3]
    with pytest.raises(NashError, match="pad_token_id"):
        vocab.renumber_config(config, [0, 2])


@pytest.mark.parametrize("bias_form", ["tuples", "strings", "list"])
def test_renumber_config_maps_the_generation_configs_nested_ids(bias_form):
    """Every token-id field of a generation config is renumbered: ids that must stay producible
    (forced tokens, forced words) are kept; a ban or bias naming a dropped token is removed (that
    token cannot be generated any more, so it had nothing left to act on); so is a suppressed
    token `kept` leaves out (prune-vocab keeps those, `config_ids`)."""
    from transformers import GenerationConfig

    kept = list(range(14)) + [50, 51, 60]  # 50 -> 14, 51 -> 15, 60 -> 16
    bias = {
        "tuples": {(50, 51): -1.5, (52,): 2.0, (60,): 0.5},
        # how transformers writes tuple keys to generation_config.json, and reads them back
        "strings": {"(50, 51)": -1.5, "(52,)": 2.0, "(60,)": 0.5},
        "list": [[[50, 51], -1.5], [[52], 2.0], [[60], 0.5]],
    }[bias_form]
    generation = GenerationConfig(
        bad_words_ids=[[50, 51], [52], [3, 60]],
        forced_decoder_ids=[[1, 50], [2, 60]],
        force_words_ids=[[51], [60, 3]],
        sequence_bias=bias,
        suppress_tokens=[50, 53],
        begin_suppress_tokens=[60, 99],
        forced_bos_token_id=51,
        eos_token_id=[1, 60],
    )
    required = vocab.config_ids(generation)
    assert {50, 51, 60, 1} <= required  # forced tokens, forced words, the forced first token, eos
    assert 52 not in required  # banned or biased only: not kept for that
    new = vocab.renumber_config(generation, kept, vocab_size=False)
    assert new.bad_words_ids == [[14, 15], [3, 16]]
    assert new.forced_decoder_ids == [[1, 14], [2, 16]]
    assert new.force_words_ids == [[15], [16, 3]]
    assert new.suppress_tokens == [14] and new.begin_suppress_tokens == [16]
    assert (new.forced_bos_token_id, new.eos_token_id) == (15, [1, 16])
    expected_bias = {
        "tuples": {(14, 15): -1.5, (16,): 0.5},
        "strings": {"(14, 15)": -1.5, "(16,)": 0.5},
        "list": [[[14, 15], -1.5], [[16], 0.5]],
    }[bias_form]
    assert new.sequence_bias == expected_bias
    assert generation.bad_words_ids == [[50, 51], [52], [3, 60]]  # the input is not modified
    # disjunctive forced words (a list of alternatives per word)
    generation = GenerationConfig(force_words_ids=[[[50, 51], [60]]])
    assert vocab.config_ids(generation) >= {50, 51, 60}
    assert vocab.renumber_config(generation, kept, vocab_size=False).force_words_ids == [[[14, 15], [16]]]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bad_words_ids", [50, 51]),
        ("forced_decoder_ids", [[1]]),
        ("sequence_bias", {"fifty": 1.0}),
        ("force_words_ids", "fifty"),
    ],
)
def test_a_malformed_token_id_field_is_refused_in_one_line(field, value):
    from transformers import GenerationConfig

    generation = GenerationConfig()
    setattr(generation, field, value)
    with pytest.raises(NashError, match=f"generation config's {field} .*; fix"):
        vocab.config_ids(generation, name="the generation config")
    with pytest.raises(NashError, match=field):
        vocab.renumber_config(generation, [0, 1, 50, 51], vocab_size=False, name="the generation config")


def test_byte_level_bpe_reduction_is_exact_and_needs_the_closure():
    from nash_cli.toy import train_byte_level_bpe

    tokenizer = train_byte_level_bpe(CORPUS + HELD_OUT[3:4])
    document = json.loads(tokenizer.backend_tokenizer.to_str())
    chosen = _chosen(document, CORPUS[:4])
    kept = sorted(tokenizer_surgery.close_ids(document, chosen))
    # all 256 byte symbols and the five specials survive whatever the data
    tokens = tokenizer_surgery.token_strings(document)
    assert sum(len(tokens[i]) == 1 for i in kept) == 256
    assert {0, 1, 2, 3, 4} <= set(kept)
    assert len(kept) < len(tokens)
    texts = CORPUS + HELD_OUT
    covered, exact = _exactness(document, kept, texts)
    assert 4 <= covered < len(texts)  # the held-out sentence with new words is not covered
    assert exact == covered
    # without the merge closure, kept tokens can no longer be built: tokenisation changes
    assert set(chosen) != set(kept)
    covered_open, exact_open = _exactness(document, chosen, texts)
    assert exact_open < covered_open
    # merges left are exactly those whose parts and result are kept, in the original order
    reduced = tokenizer_surgery.reduce_tokenizer(document, kept)
    kept_tokens = set(reduced["model"]["vocab"])
    original_pairs = tokenizer_surgery.merge_pairs(document)
    expected = [p for p in original_pairs if p[0] in kept_tokens and p[1] in kept_tokens and p[0] + p[1] in kept_tokens]
    assert tokenizer_surgery.merge_pairs(reduced) == expected
    assert sorted(reduced["model"]["vocab"].values()) == list(range(len(kept)))


def test_wordpiece_is_refused():
    with pytest.raises(NashError, match="WordPiece"):
        tokenizer_surgery.model_type({"model": {"type": "WordPiece", "vocab": {}}})


def test_real_t5_unigram_reduction_is_exact(shared_dir):
    path = shared_dir / "data" / "t5-vocab" / "tokenizer.json"
    if not path.is_file():
        pytest.skip("../shared/data/t5-vocab is absent")
    document = json.loads(path.read_text())
    train = CORPUS + ["Who won the 2018 World Cup? France beat Croatia 4-2 in Moscow."]
    kept = sorted(tokenizer_surgery.close_ids(document, _chosen(document, train)))
    tokens = tokenizer_surgery.token_strings(document)
    assert all(f"<extra_id_{i}>" in {tokens[k] for k in kept} for i in range(100))
    assert len(kept) < 1000
    texts = train + HELD_OUT + ["France won the cup.", "Croatia beat the fox in 2018 4-2", "ÿ € ✓ naïve café"]
    covered, exact = _exactness(document, kept, texts)
    assert covered > len(train) and exact == covered
    reduced = tokenizer_surgery.reduce_tokenizer(document, kept)
    assert len(reduced["model"]["vocab"]) == len(kept) and reduced["model"]["unk_id"] == 2
    assert [a["id"] for a in reduced["added_tokens"]] == sorted(a["id"] for a in reduced["added_tokens"])


CODES = {"eng_Latn": 10, "deu_Latn": 11, "fra_Latn": 12, "spa_Latn": 13}


@pytest.mark.parametrize(
    "settings, kept",
    [
        # the target (a config's forced first token, or the tokenizer's tgt_lang) and the source in the input
        ({"source": "eng_Latn", "target": None, "config_ids": {2, 11}}, {"deu_Latn": "target", "eng_Latn": "source"}),
        ({"source": None, "target": "fra_Latn"}, {"fra_Latn": "target"}),
        # codes the tokenizer class always adds, and named ones
        ({"source": "eng_Latn", "target": "deu_Latn", "fixed": ["spa_Latn"], "named": ["fra_Latn"]},
         {"deu_Latn": "target", "eng_Latn": "source", "spa_Latn": "fixed", "fra_Latn": "named"}),
        ({"source": None, "target": "deu_Latn", "named": ["all"]},
         {"deu_Latn": "target", "eng_Latn": "named", "fra_Latn": "named", "spa_Latn": "named"}),
        # no target known: every code stays
        ({"source": "eng_Latn", "target": None},
         {"eng_Latn": "source", "deu_Latn": "no target set", "fra_Latn": "no target set", "spa_Latn": "no target set"}),
    ],
)
def test_choose_languages(settings, kept):
    choice = vocab.choose_languages(CODES, **settings)
    assert choice.why == kept
    assert choice.kept == {code: CODES[code] for code in kept}
    assert choice.dropped == {code: index for code, index in CODES.items() if code not in kept}


def test_choose_languages_refuses_unknown_codes():
    with pytest.raises(NashError, match="no such language code; it knows deu_Latn, eng_Latn"):
        vocab.choose_languages(CODES, source=None, target=None, named=["xx"])
    with pytest.raises(NashError, match="has no language codes"):
        vocab.choose_languages({}, source=None, target=None, named=["deu_Latn"])


def test_tokenizer_config_special_lists_keep_only_kept_tokens():
    from nash_cli.surgery.tokenizer import renumber_tokenizer_config

    config = {"extra_special_tokens": ["eng_Latn", {"content": "deu_Latn"}, "fra_Latn"], "unk_id": 3,
              "added_tokens_decoder": {"3": {"content": "<unk>"}, "12": {"content": "fra_Latn"}}}
    renumbered = renumber_tokenizer_config(config, {3: 0, 10: 1, 11: 2}, kept_tokens={"<unk>", "eng_Latn", "deu_Latn"})
    assert renumbered["extra_special_tokens"] == ["eng_Latn", {"content": "deu_Latn"}]
    assert renumbered["unk_id"] == 0 and renumbered["added_tokens_decoder"] == {"0": {"content": "<unk>"}}


def test_sentencepiece_restriction_marks_dropped_pieces_unused():
    import sentencepiece

    from nash_cli.surgery.spm_vocab import reduce_vocab, restrict_sentencepiece
    from translation_tokenizers import _sentencepiece_model, sentences

    unigram = _sentencepiece_model("unigram").read_bytes()
    original = sentencepiece.SentencePieceProcessor(model_proto=unigram)
    text = sentences(1, seed=4)[0]
    pieces = original.encode(text, out_type=str)
    restricted, done = restrict_sentencepiece(unigram, {pieces[0]})
    assert done
    spelled = sentencepiece.SentencePieceProcessor(model_proto=restricted).encode(text, out_type=str)
    assert pieces[0] not in spelled and "".join(spelled) == "".join(pieces)
    bpe = _sentencepiece_model("bpe").read_bytes()
    assert restrict_sentencepiece(bpe, {"▁the"}) == (bpe, False)
    assert reduce_vocab({"</s>": 0, "a": 1, "b": 2, "<pad>": 3}, [0, 2, 3]) == {"</s>": 0, "b": 1, "<pad>": 2}
    with pytest.raises(NashError, match="token id 4 is not in the tokenizer's vocab.json"):
        reduce_vocab({"</s>": 0}, [0, 4])
