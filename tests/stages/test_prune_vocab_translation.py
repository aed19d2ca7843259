"""`prune-vocab` and the export's vocabulary map on the translation families.

Marian (python tokenizer: vocab.json and two SentencePiece models), M2M100 with NLLB's tokenizer
(BPE tokenizer.json, language codes in `extra_special_tokens`), mBART-50 (Unigram tokenizer.json,
the class's fixed list of codes) and Pegasus (Unigram with reserved offset tokens), each a tiny
stock model (`family_models`): the reduction is exact (a covered text, with its language codes
and end token, tokenises to the renumbered original ids, as source and as target), the logits
are the original's at the kept ids, the forced first token stays the target language's code, and
only the language codes a one-direction model needs are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error
from family_models import FAMILIES, TARGET_LANGUAGE, build
from translation_tokenizers import sentences

#: A few sentence pairs: a small share of the tokens, so that most are dropped.
SOURCES = sentences(6, seed=11)
TARGETS = sentences(6, seed=12)
#: Other texts: some covered by the kept tokens, some not.
OTHERS = sentences(40, seed=13)


def _data(path: Path) -> Path:
    path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in zip(SOURCES, TARGETS)))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {family: build(family, tmp_path_factory.mktemp(family))[0] for family in FAMILIES}


def _load(path: Path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_translation_families_reduce_exactly(family, checkpoints, tmp_path, cli):
    source = checkpoints[family]
    out = tmp_path / "small"
    result = cli("prune-vocab", source, "--data", _data(tmp_path / "train.jsonl"), "-o", out, "--multiple-of", "8", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    original, tokenizer = _load(source)
    pruned, reduced = _load(out)
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    mapping = {old: new for new, old in enumerate(kept)}
    vocabulary = report["vocabulary"]
    assert len(reduced) == len(kept) == pruned.config.vocab_size < original.config.vocab_size
    assert report["training"]["covered"] == report["training"]["exact"] == len(TARGETS)

    # a translation model keeps its sources' tokens by default (its encoder reads them); Pegasus does not
    assert vocabulary["keep_source_tokens"] is (family != "pegasus")
    # exact: every covered text, with the tokenizer's special tokens, as source and as target
    covered = uncovered = 0
    for text in SOURCES + TARGETS + OTHERS:
        for kwargs in ({"text": text}, {"text_target": text}):
            ids = tokenizer(**kwargs)["input_ids"]
            new = reduced(**kwargs)["input_ids"]
            if set(ids) <= set(mapping):
                covered += 1
                assert new == [mapping[i] for i in ids], (kwargs, ids, new)
            else:  # spelled with smaller kept pieces, never as <unk> (Marian's restricted SentencePiece too)
                uncovered += 1
                assert reduced.unk_token_id not in new or tokenizer.unk_token_id in ids
    assert covered > 2 * len(SOURCES) and uncovered > 10, (covered, uncovered)
    assert reduced.decode(reduced(text_target=TARGETS[0])["input_ids"], skip_special_tokens=True) == TARGETS[0]

    # the logits are the original's at the kept ids (inputs every family keeps: the targets)
    inputs = tokenizer(TARGETS[:2], return_tensors="pt", padding=True)
    new_inputs = reduced(TARGETS[:2], return_tensors="pt", padding=True)
    assert new_inputs["input_ids"].clone().apply_(lambda i: kept[i]).equal(inputs["input_ids"])
    with torch.no_grad():
        before = original(**inputs, decoder_input_ids=inputs["input_ids"][:, :4]).logits[..., kept]
        after = pruned(**new_inputs, decoder_input_ids=new_inputs["input_ids"][:, :4]).logits
    torch.testing.assert_close(after, before)

    # the forced first token is still the target language's code
    generation = json.loads((out / "generation_config.json").read_text())
    if family in TARGET_LANGUAGE:
        assert generation["forced_bos_token_id"] == reduced.convert_tokens_to_ids(TARGET_LANGUAGE[family])
        assert reduced.tgt_lang == tokenizer.tgt_lang and reduced.src_lang == tokenizer.src_lang


def test_one_direction_keeps_only_its_language_codes(checkpoints, tmp_path, cli):
    data = _data(tmp_path / "train.jsonl")
    result = cli("prune-vocab", checkpoints["m2m_100"], "--data", data, "-o", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.stderr
    languages = result.json()["vocabulary"]["languages"]
    assert languages == {"kept": {"deu_Latn": "target", "eng_Latn": "source"}, "dropped": 1}
    config = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert config["extra_special_tokens"] == ["eng_Latn", "deu_Latn"]
    _, reduced = _load(tmp_path / "a")
    assert reduced.convert_tokens_to_ids("fra_Latn") == reduced.unk_token_id

    result = cli("prune-vocab", checkpoints["m2m_100"], "--data", data, "-o", tmp_path / "b", "--keep-language",
                 "fra_Latn", "--json")
    assert result.json()["vocabulary"]["languages"]["kept"]["fra_Latn"] == "named"
    _, reduced = _load(tmp_path / "b")
    assert reduced.convert_tokens_to_ids("fra_Latn") != reduced.unk_token_id

    # mBART-50's tokenizer adds its 52 codes whenever it loads: all are kept
    result = cli("prune-vocab", checkpoints["mbart"], "--data", data, "-o", tmp_path / "c", "--json")
    kept = result.json()["vocabulary"]["languages"]["kept"]
    assert len(kept) == 52 and kept["de_DE"] == "target" and kept["en_XX"] == "source" and kept["fr_XX"] == "fixed"


@pytest.mark.parametrize(
    "family, extra, fragment",
    [
        ("m2m_100", ["--keep-language", "xx_Yyyy"], "--keep-language xx_Yyyy: the tokenizer has no such language code"),
        ("pegasus", ["--keep-language", "de_DE"], "the tokenizer has no language codes"),
    ],
)
def test_unknown_language_is_refused(family, extra, fragment, checkpoints, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("prune-vocab", checkpoints[family], "--data", _data(tmp_path / "train.jsonl"), "-o", out, *extra)
    assert_user_error(result, fragment)
    assert not out.exists()


def test_export_vocabulary_map_allows_the_target_language(checkpoints, tmp_path, cli):
    pytest.importorskip("ctranslate2")
    from nash_cli.export.vocab_map import VMAP_FILE

    source = checkpoints["m2m_100"]
    out = tmp_path / "ct2"
    result = cli("export", source, "-o", out, "--vocab-map", _data(tmp_path / "train.jsonl"), "--json")
    assert result.exit_code == 0, result.stderr
    always = (out / VMAP_FILE).read_text().split("\n", 1)[0].strip().split(" ")
    assert "deu_Latn" in always and "</s>" in always and "eng_Latn" not in always
