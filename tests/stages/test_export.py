"""`nash export`: CTranslate2 models equal to nash's transformers models, and run by bench / eval.

Exactness is checked for T5 v1.0, T5 v1.1 (gated, untied head) and BART, dense and compact
(unequal heads per layer, a layer without heads, a layer without FFN units): the float32 export
gives the same beam-4 tokens and the same scores (within 1e-4) as the transformers model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error, snapshot, write_checkpoint

ctranslate2 = pytest.importorskip("ctranslate2")

from nash_cli import artifact  # noqa: E402
from nash_cli.errors import NashError  # noqa: E402
from nash_cli.export.runtime import CTranslate2Model, is_ctranslate2_dir  # noqa: E402
from nash_cli.generation import GenerationSettings, generate_kwargs  # noqa: E402
from nash_cli.stages.export import ExportOptions, run  # noqa: E402
from nash_cli.surgery.compact import compact_model  # noqa: E402
from nash_cli.toy import tiny_model  # noqa: E402

EOS = 1


def _lively(model, family: str, seed: int):
    """Random weights large enough for varied outputs, some of which end early (EOS)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.3 if family == "bart" else 0.2))
        if family == "bart":
            model.final_logits_bias.normal_(generator=generator)
            model.final_logits_bias[0, EOS] = 2.5
        else:
            model.lm_head.weight[EOS] *= 3.0 if family == "t5" else 1.5
    return model


def _masks(layers: int, heads: int, d_ff: int, *, equal_heads: bool):
    """Unequal heads (layer 0 keeps none, layer 1 a non-prefix subset) and FFN widths (layer 2
    keeps none); or, with `equal_heads`, 3 of 4 heads everywhere (different subsets)."""
    head_mask = torch.ones(layers, heads)
    if equal_heads:
        for layer in range(layers):
            head_mask[layer, layer % heads] = 0
    else:
        head_mask[0] = 0
        head_mask[1, 0] = 0
        head_mask[1, 2] = 0
        head_mask[3, 1] = 0
    ffn = (torch.rand(layers, d_ff, generator=torch.Generator().manual_seed(7)) > 0.4).float()
    ffn[2] = 0
    return head_mask, ffn


def _checkpoint(tmp_path: Path, tokenizer, family: str, shape: str) -> Path:
    model = _lively(tiny_model(family, vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64,
                               encoder_layers=4, decoder_layers=2, seed=3), family, seed=14)
    source = write_checkpoint(tmp_path / "dense", model, tokenizer)
    if shape == "dense":
        return source
    compact, custom = compact_model(model, *_masks(4, 4, 64, equal_heads=shape == "equal-heads"))
    assert custom
    return artifact.save_checkpoint(compact, tmp_path / "compact", source=source, stage="compact", arguments={},
                                    state="compact")


def _inputs(vocab: int):
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(4, vocab, (8, 12), generator=generator)
    ids[:, -1] = EOS
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0  # a padded row: CTranslate2 gets it without the padding
    ids[2, 7] = EOS
    ids[2, 8:] = 0
    return ids, mask


def _until_eos(row: list[int]) -> list[int]:
    tokens = row[1:]
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def _transformers(model, ids, mask, settings):
    """nash's transformers generation, with scores; early_stopping=True is CTranslate2's beam search
    and forced EOS is left out (CTranslate2 has none): see docs/export.md."""
    kwargs = generate_kwargs(model, settings)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, early_stopping=True, forced_eos_token_id=None,
                             return_dict_in_generate=True, output_scores=True, **kwargs)
    return out.sequences, out.sequences_scores.tolist()


def _compare(source: Path, export: Path, *, max_new_tokens: int = 20) -> dict:
    model = artifact.load_model(source)
    engine = CTranslate2Model(export)
    ids, mask = _inputs(engine.config.vocab_size)
    settings = GenerationSettings(num_beams=4, max_new_tokens=max_new_tokens)
    expected, expected_scores = _transformers(model, ids, mask, settings)
    got, scores = engine.generate_with_scores(ids, mask, settings)
    rows = [(_until_eos(a), _until_eos(b)) for a, b in zip(got.tolist(), expected.tolist())]
    assert [a for a, _ in rows] == [b for _, b in rows]
    difference = max(abs(a - b) for a, b in zip(scores, expected_scores))
    assert difference < 1e-4
    return {"ended": sum(EOS in a for a, _ in rows), "distinct": len({tuple(a) for a, _ in rows}),
            "score_difference": difference}


@pytest.mark.parametrize("shape", ["dense", "compact", "equal-heads"])
@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
def test_float32_export_equals_transformers(family, shape, tmp_path, tokenizer):
    source = _checkpoint(tmp_path, tokenizer, family, shape)
    result = run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))
    assert is_ctranslate2_dir(tmp_path / "ct2")
    padding = result.padding
    if shape == "compact":
        assert padding["heads_per_layer"] == [0, 2, 4, 3] and padding["engine_heads"] == 4
        assert padding["zero_heads"] == 7 and padding["zero_ffn_units"] == 1
        assert "their attention is computed" in result.padding_summary
    elif shape == "equal-heads":  # same count everywhere: no zero heads, T5's bias sliced per layer
        assert padding["engine_heads"] == 3 and padding["zero_heads"] == 0
    else:
        assert padding["zero_heads"] == 0 and padding["engine_heads"] == 4
    seen = _compare(source, tmp_path / "ct2")
    assert seen["distinct"] > 1  # not one degenerate output repeated
    if (family, shape) != ("t5", "dense"):  # that random T5 never ends within 20 tokens; its compact forms do
        assert seen["ended"] > 0  # some outputs end early: EOS and length normalisation are exercised


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_layers_selected_from_a_compact_model_export_exactly(family, tmp_path, tokenizer, cli):
    # keeping the last two of four compact encoder layers: the export reads their heads, not layers 0-1's
    source = _checkpoint(tmp_path, tokenizer, family, "compact")
    student = tmp_path / "student"
    result = cli("select-layers", source, "-k", "2", "--encoder-layers", "2", "--strategy", "high", "-o", student)
    assert result.exit_code == 0, result.stderr
    config = json.loads((student / "config.json").read_text())
    assert config["encoder_heads"] == [[0, 1, 2, 3], [0, 2, 3]]
    assert len(config["encoder_ffn_dims"]) == 2 and config["encoder_ffn_dims"][0] == 0
    exported = run(ExportOptions(checkpoint=str(student), output=tmp_path / "ct2"))
    assert exported.padding["heads_per_layer"] == [4, 3]
    assert exported.check["tokens_equal"] is True
    _compare(student, tmp_path / "ct2")


def test_gated_t5_keeps_its_untied_head_and_no_output_scaling(make_checkpoint, tmp_path):
    # The project's own untied fixture: lm_head differs from the shared embedding in the file,
    # though transformers 5 reports tie_word_embeddings=True for it.
    from safetensors.torch import load_file

    from nash_cli.arch import family_of

    source = make_checkpoint("t5-gated")
    weights = load_file(str(source / "model.safetensors"))
    assert not torch.equal(weights["lm_head.weight"], weights["shared.weight"])
    model = artifact.load_model(source)
    assert model.config.tie_word_embeddings  # the transformers 5 quirk the stock converter trips on
    assert family_of(model).anatomy(model).output_scale is None
    t5 = artifact.load_model(make_checkpoint("t5"))
    assert family_of(t5).anatomy(t5).output_scale == pytest.approx(t5.config.d_model**-0.5)
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))
    _compare(source, tmp_path / "ct2", max_new_tokens=8)


def test_export_directory_manifest_tokenizer_and_check(make_checkpoint, tmp_path, cli):
    source = make_checkpoint("bart")
    out = tmp_path / "ct2"
    result = cli("export", source, "-o", out, "--quantization", "int8", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    assert document["quantization"] == "int8" and document["check"]["compute_type"].startswith("int8")
    names = {p.name for p in out.iterdir()}
    assert {"model.bin", "config.json", "shared_vocabulary.json", "nash.json", "generation_config.json",
            "tokenizer.json"} <= names
    manifest = json.loads((out / "nash.json").read_text())
    assert manifest["stage"] == "export" and manifest["engine"] == "ctranslate2"
    assert manifest["quantization"] == "int8" and manifest["state"] == "dense"
    assert manifest["lineage"][-1]["path"] == str(Path(source).absolute())
    assert manifest["ctranslate2"]["parameters"] == artifact.read_manifest(out)["ctranslate2"]["parameters"]
    # generation defaults and tokenizer travel with the export
    assert json.loads((out / "generation_config.json").read_text())["forced_eos_token_id"] == EOS
    assert artifact.load_tokenizer(out)("the dog")["input_ids"] == artifact.load_tokenizer(source)("the dog")["input_ids"]
    # the float32 check is exact
    exact = cli("export", source, "-o", tmp_path / "f32", "--json")
    assert exact.json()["check"]["tokens_equal"] is True


@pytest.fixture
def masked(make_checkpoint, tmp_path):
    import shutil

    path = tmp_path / "masked"
    shutil.copytree(make_checkpoint("t5"), path)
    (path / "nash.json").write_text(json.dumps({"stage": "prune-encoder", "state": "masked"}))
    return path


@pytest.fixture
def unsupported(tmp_path):
    path = tmp_path / "gpt2"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "is_encoder_decoder": False}))
    return path


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("quantization", "unknown --quantization 'int4'"),
        ("family", "model type 'gpt2'"),
        ("masked", "run nash compact first"),
        ("exists", "already exists; pass --force"),
        ("device", "unknown --device"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(case, fragment, make_checkpoint, masked, unsupported, tmp_path, cli):
    source = {"family": unsupported, "masked": masked}.get(case, make_checkpoint("t5"))
    out = tmp_path / "out"
    args = ["export", source, "-o", out]
    if case == "quantization":
        args += ["--quantization", "int4"]
    if case == "device":
        args += ["--device", "tpu"]
    if case == "exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert_user_error(cli(*args), fragment)
    assert snapshot(tmp_path) == before


def test_missing_extra_names_it(make_checkpoint, tmp_path, cli, monkeypatch):
    source = make_checkpoint("t5")
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 now raises ImportError
    before = snapshot(tmp_path)
    assert_user_error(cli("export", source, "-o", tmp_path / "out"), 'pip install "nash-cli[ctranslate2]"')
    assert_user_error(cli("bench", tmp_path / "ct2", "--batch", "2", "--source-length", "8", "--repeats", "1"),
                      "nash-cli[ctranslate2]")
    assert snapshot(tmp_path) == before


def test_bench_times_both_engines_with_the_same_settings(make_checkpoint, tmp_path, cli):
    source = make_checkpoint("t5-gated")
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", quantization="int8", verify=False))
    result = cli("bench", source, tmp_path / "ct2", "--baseline", source, "--batch", "3", "--beams", "2",
                 "--source-length", "10", "--fixed-length", "6", "--repeats", "2", "--threads", "1", "--json")
    assert result.exit_code == 0, result.stderr
    document = result.json()
    hf, ct2 = document["models"]
    assert hf["engine"]["engine"] == "transformers" and hf["engine"]["compute_type"] == "float32"
    assert ct2["engine"]["engine"] == "ctranslate2" and ct2["engine"]["compute_type"].startswith("int8")
    assert hf["engine"]["threads"] == ct2["engine"]["threads"] == 1
    assert hf["generation"] == ct2["generation"]  # same beams and lengths
    assert hf["mean_generated_length"] == ct2["mean_generated_length"] == 6.0
    assert ct2["speedup"] is not None and len(ct2["repeat_s"]) == 2
    assert ct2["parameters"] == hf["parameters"]  # the source's counts, recorded by the export
    assert document["environment"]["ctranslate2"] == ctranslate2.__version__
    table = cli("bench", source, tmp_path / "ct2", "--batch", "2", "--source-length", "8", "--fixed-length", "3",
                "--repeats", "1", "--threads", "1")
    assert table.exit_code == 0 and "ct2" in table.stdout


def test_eval_scores_an_export_like_its_source(make_checkpoint, tmp_path, cli):
    source = make_checkpoint("bart")
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in [
        ("the quick brown fox jumps over the lazy dog .", "fox"),
        ("a cat sat on the mat and looked at the dog .", "cat"),
        ("one two three .", "numbers"),
    ]))
    docs = {}
    for name, model in (("hf", source), ("ct2", tmp_path / "ct2")):
        result = cli("eval", model, "--data", data, "--beams", "1", "--max-new-tokens", "5", "-o",
                     tmp_path / "eval" / name / "metrics.json", "--json")  # never inside the export: an input
        assert result.exit_code == 0, result.stderr
        docs[name] = result.json()
    assert docs["ct2"]["engine"]["engine"] == "ctranslate2"
    assert docs["ct2"]["scores"] == docs["hf"]["scores"]
    predictions = {
        name: [json.loads(line)["prediction"] for line in (tmp_path / "eval" / name / "generations.jsonl").read_text().splitlines()]
        for name in docs
    }
    assert predictions["ct2"] == predictions["hf"]


def test_a_recipe_exports_the_student_and_benches_and_evaluates_it(tmp_path, make_checkpoint, monkeypatch):
    from nash_cli.pipeline import plan_run
    from nash_cli.recipe import parse_recipe

    raw = {
        "name": "r",
        "teacher": "t",
        "data": {"train": "d.jsonl"},
        "stages": {"select_layers": {"decoder_layers": 1}, "export": {"quantization": "int8"}, "bench": {}, "eval": {}},
    }
    recipe = parse_recipe(raw)
    stages = {stage.key: stage for stage in plan_run(recipe, tmp_path, inputs={"teacher": "t", "train": "d.jsonl"})}
    student = str(tmp_path / "01-select-layers")
    exported = str(tmp_path / "02-export")
    assert stages["export"].kwargs["checkpoint"] == student and str(stages["export"].kwargs["output"]) == exported
    assert stages["export"].kwargs["quantization"] == "int8"
    assert stages["bench"].kwargs["models"] == [student, exported] and stages["bench"].kwargs["baseline"] == "t"
    assert [call["checkpoint"] for call in stages["eval"].calls] == ["t", student, exported]
    assert "export" in stages["bench"].upstream and "export" in stages["eval"].upstream
    # without the extra the recipe fails at once, naming it, before any stage runs
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(NashError, match=r"stages\.export: .*nash-cli\[ctranslate2\]"):
        parse_recipe(raw)


#: bart-large-cnn's generation settings (a summariser: forced first token, long minimum).
CNN = {"forced_bos_token_id": 0, "min_length": 56, "max_length": 142, "no_repeat_ngram_size": 3,
       "length_penalty": 2.0, "num_beams": 4, "early_stopping": True}


@pytest.mark.parametrize("unsupported", [{}, {"suppress_tokens": [7, 8], "bad_words_ids": [[9]]}, CNN])
def test_the_load_back_check_leaves_out_what_ctranslate2_documents_it_lacks(unsupported, tmp_path, tokenizer):
    # Every real BART sets forced_eos_token_id: transformers forces EOS at the length cap,
    # CTranslate2 cannot. Outputs that reach the cap (here all: EOS made unlikely) must not turn
    # an exact export into "please report this as a nash bug".
    from transformers import GenerationConfig

    model = _lively(tiny_model("bart", vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64,
                               encoder_layers=2, decoder_layers=2, seed=3), "bart", seed=14)
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = -20.0
    source = write_checkpoint(tmp_path / "bart", model, tokenizer)
    config = GenerationConfig.from_pretrained(source)
    assert config.forced_eos_token_id == EOS
    for key, value in unsupported.items():
        setattr(config, key, value)
    config.save_pretrained(source)
    result = run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2"))
    assert result.check["tokens_equal"] is True and result.check["token_agreement"] == 1.0
    assert not any("report" in note for note in result.notes)
    left_out = ["forced_eos_token_id", *sorted(key for key in unsupported if key not in CNN)]
    assert sorted(result.check["left_out"]) == sorted(left_out)
    assert any("forced_eos_token_id" in note and "docs/export.md" in note for note in result.notes)
    # and the outputs did reach the cap, where transformers' forced EOS and CTranslate2 differ
    engine = CTranslate2Model(tmp_path / "ct2", vocab_map=False)
    ids, mask = _inputs(engine.config.vocab_size)
    got = engine.generate(ids, mask, GenerationSettings(num_beams=1, max_new_tokens=16))
    assert got.shape[1] == 17 and EOS not in got[:, 1:].tolist()[0]


def test_forced_first_token_becomes_a_target_prefix(tmp_path, tokenizer):
    # BART summarisers force a first token (forced_bos_token_id); the export keeps it as a
    # one-token target prefix and returns it in the sequences, as transformers does.
    from transformers import GenerationConfig

    source = _checkpoint(tmp_path, tokenizer, "bart", "dense")
    config = GenerationConfig.from_pretrained(source)
    config.forced_bos_token_id = 3
    config.num_beams = 4
    config.early_stopping = True
    config.save_pretrained(source)
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "ct2", verify=False))
    model = artifact.load_model(source)
    engine = CTranslate2Model(tmp_path / "ct2")
    ids, mask = _inputs(engine.config.vocab_size)
    # At least one token after the forced one: right after a prefix CTranslate2 does not let a
    # secondary beam end (a guard against empty outputs) where transformers does (docs/export.md).
    settings = GenerationSettings(num_beams=4, max_new_tokens=10, min_new_tokens=2)
    # (Scores are not compared: under a minimum length CTranslate2 renormalises the log-probs
    # without the end token, transformers does not; docs/export.md.)
    expected, _ = _transformers(model, ids, mask, settings)
    got = engine.generate(ids, mask, settings)
    assert got[:, 1].tolist() == [3] * len(ids)  # the forced token, counted in the length as transformers does
    assert [_until_eos(row) for row in got.tolist()] == [_until_eos(row) for row in expected.tolist()]
    capped = engine.generate(ids, mask, GenerationSettings(num_beams=4, max_new_tokens=4, min_new_tokens=2))
    assert capped.shape[1] <= 1 + 4
    assert engine.notes(4) and "forced_eos_token_id" in " ".join(engine.notes(4))


# --- the vocabulary map (nash export --vocab-map) ----------------------------------------------


def test_vocabulary_map_file_and_coverage_by_hand():
    from nash_cli.export.vocab_map import build_vocabulary_map, coverage, vmap_text

    tokens = ["<pad>", "</s>", "<unk>", "▁a", "▁b", "▁c", "▁d", "two words", ""]
    vocab_map = build_vocabulary_map(tokens, target_ids=[[3, 1], [3, 4, 99]], special_ids=[0, 1, 2, None])
    assert vocab_map.always == [0, 1, 2, 3, 4] and vocab_map.special == [0, 1, 2]
    assert vocab_map.from_targets == 3  # 3, 4 and 1 (99 lies outside the vocabulary)
    assert vocab_map.source_entries == [5, 6] and vocab_map.unwritable == [7, 8]
    assert vmap_text(tokens, vocab_map) == "\t<pad> </s> <unk> ▁a ▁b\n▁c\t▁c\n▁d\t▁d\n"
    # example 1: [5] is in its input -> covered; [6] is not -> not; example 2: [4, 1] -> covered
    result = coverage([[[5, 1], [6]], [[4, 1]]], [[5, 3], [3]], vocab_map.always)
    assert result == {"references": 3, "covered": 2, "share": 2 / 3, "examples": 2, "examples_covered": 2,
                      "missing_tokens": 1}


def _jsonl(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs))
    return path


def test_export_writes_the_map_and_its_coverage(make_checkpoint, tokenizer, tmp_path, cli):
    source = make_checkpoint("t5")
    train = _jsonl(tmp_path / "train.jsonl", [("the quick brown fox", "fox ."), ("a cat sat on the mat", "the cat")])
    held_out = _jsonl(tmp_path / "dev.jsonl", [
        ("where is the dog ?", "the dog"),       # "dog" comes from its own input: covered
        ("one two three", "seven"),              # "seven" is neither in the targets nor the input
        ("bob will bring coffee", "fox"),        # from the training targets: covered
    ])
    result = cli("export", source, "-o", tmp_path / "ct2", "--vocab-map", train, "--eval-data", held_out,
                 "--no-verify", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()["vocab_map"]
    targets = {tokenizer.convert_tokens_to_ids(t) for t in ("fox", ".", "the", "cat", "</s>")}
    special = {tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "</s>", "<unk>")}
    assert report["from_targets"] == len(targets) and report["special"] == len(special)
    assert report["always_allowed"] == len(targets | special)
    assert report["source_entries"] == len(tokenizer) - len(targets | special)
    assert report["coverage"]["references"] == 3 and report["coverage"]["covered"] == 2
    assert report["coverage"]["share"] == pytest.approx(2 / 3) and report["coverage"]["missing_tokens"] == 1
    manifest = json.loads((tmp_path / "ct2" / "nash.json").read_text())
    assert manifest["ctranslate2"]["vocabulary_map"]["default"] is True
    lines = (tmp_path / "ct2" / "vmap.txt").read_text().splitlines()
    assert lines[0].startswith("\t") and len(lines) == 1 + report["source_entries"]
    table = cli("export", source, "-o", tmp_path / "ct2b", "--vocab-map", train, "--eval-data", held_out, "--no-verify")
    assert table.exit_code == 0 and "66.7% (2 of 3)" in table.stdout
    # no map: nothing about one in the result, the manifest or the directory
    plain = cli("export", source, "-o", tmp_path / "plain", "--no-verify", "--json")
    assert plain.json()["vocab_map"] is None and not (tmp_path / "plain" / "vmap.txt").exists()
    assert CTranslate2Model(tmp_path / "plain").engine_info()["vocab_map"] is None


def test_eval_data_keyed_by_split_is_read_at_its_validation_split(make_checkpoint, tmp_path, cli):
    # The split prune-vocab's --eval-data reads too (test_prune_vocab); --vocab-map reads train.
    records = {"train": [("the quick brown fox", "fox ."), ("a cat sat on the mat", "the cat")],
               "validation": [("where is the dog ?", "the dog")]}
    keyed = tmp_path / "keyed.json"
    keyed.write_text(json.dumps({name: [{"source": s, "target": t} for s, t in pairs] for name, pairs in records.items()}))
    result = cli("export", make_checkpoint("t5"), "-o", tmp_path / "ct2", "--vocab-map", keyed, "--eval-data", keyed,
                 "--no-verify", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["vocab_map"]["coverage"]["references"] == len(records["validation"])


def _text_of(tokenizer, row: list[int]) -> str:
    return tokenizer.decode(_until_eos(row), skip_special_tokens=True)


SOURCES = ["the quick brown fox", "a cat sat on the mat", "where is the meeting ?", "one two three four"]


def _confined(tmp_path: Path, tokenizer, family: str, allowed: set[int], sharpness: float = 6.0) -> Path:
    """A lively checkpoint that can only emit `allowed`: the lm_head rows (and BART's logit bias) of
    every other token are zero, the allowed rows are multiplied by `sharpness`, so the others' logit
    (0) lies far below the best allowed one at every step and their probability is negligible."""
    model = _lively(tiny_model(family, vocab_size=len(tokenizer), d_model=32, num_heads=4, d_ff=64, encoder_layers=2,
                               decoder_layers=2, seed=3), family, seed=14)
    outside = torch.tensor([i for i in range(len(tokenizer)) if i not in allowed])
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpness)
        model.lm_head.weight[outside] = 0.0
        if family == "bart":
            model.final_logits_bias.mul_(sharpness)
            model.final_logits_bias[0, outside] = 0.0
    return write_checkpoint(tmp_path / f"{family}-confined", model, tokenizer)


# CTranslate2 takes the softmax over the allowed tokens only, so each log-probability rises by the
# log of the mass left out, by a different amount for each beam at each step. Beam-4 outputs are
# therefore equal with and without the map only where that mass is negligible (a model that gives
# the excluded tokens next to no probability, as a trained model gives tokens its task never
# emits); on a random model's nearly flat distributions the beams rank differently even when every
# output is covered. So the model here can only emit half the vocabulary, the map allows exactly
# that half (from the training targets) plus each batch's inputs, and the other tokens are refused.
@pytest.mark.parametrize("family", ["t5-gated", "bart"])
def test_map_keeps_beam_outputs_where_every_output_is_covered(family, tokenizer, tmp_path, cli):
    half = {i for i in range(len(tokenizer)) if i % 2 == 0 or i < 4}
    source = _confined(tmp_path, tokenizer, family, half)
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "plain", verify=False))
    encoded = tokenizer(SOURCES, padding=True, return_tensors="pt")
    settings = GenerationSettings(num_beams=4, max_new_tokens=8)
    free = CTranslate2Model(tmp_path / "plain").generate(encoded.input_ids, encoded.attention_mask, settings)
    outputs = [_until_eos(row) for row in free.tolist()]
    assert {i for row in outputs for i in row} <= half and len({tuple(row) for row in outputs}) > 1
    words = [t for t in tokenizer.convert_ids_to_tokens(sorted(half)) if t not in ("<pad>", "</s>", "<unk>", "<s>")]
    train = _jsonl(tmp_path / "train.jsonl", [("anything", " ".join(words))])
    # the held-out data: the model's own unrestricted outputs, all covered
    own = _jsonl(tmp_path / "own.jsonl", [(s, _text_of(tokenizer, row)) for s, row in zip(SOURCES, free.tolist())])
    result = cli("export", source, "-o", tmp_path / "mapped", "--vocab-map", train, "--eval-data", own, "--no-verify",
                 "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()["vocab_map"]
    assert report["coverage"]["share"] == 1.0
    inputs = set(encoded.input_ids.flatten().tolist())
    assert set(range(len(tokenizer))) - half - inputs  # the map does refuse tokens
    mapped = CTranslate2Model(tmp_path / "mapped")
    unrestricted = CTranslate2Model(tmp_path / "mapped", vocab_map=False)
    assert mapped.use_vocab_map and not unrestricted.use_vocab_map
    with_map, with_scores = mapped.generate_with_scores(encoded.input_ids, encoded.attention_mask, settings)
    without, scores = unrestricted.generate_with_scores(encoded.input_ids, encoded.attention_mask, settings)
    assert [_until_eos(r) for r in without.tolist()] == outputs
    assert [_until_eos(r) for r in with_map.tolist()] == outputs
    # the scores only rise (the softmax over fewer tokens), and little: little mass was left out
    assert all(a >= b - 1e-5 for a, b in zip(with_scores, scores))
    assert max(a - b for a, b in zip(with_scores, scores)) < 0.05


def test_a_token_outside_the_map_is_never_emitted(tokenizer, tmp_path, cli):
    from collections import Counter

    source = _checkpoint(tmp_path, tokenizer, "t5-gated", "dense")
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "plain", verify=False))
    encoded = tokenizer(SOURCES, padding=True, return_tensors="pt")
    inputs = set(encoded.input_ids.flatten().tolist())
    settings = GenerationSettings(num_beams=4, max_new_tokens=8)
    free = CTranslate2Model(tmp_path / "plain").generate(encoded.input_ids, encoded.attention_mask, settings)
    special = {tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "</s>", "<unk>", "<s>")}
    emitted = Counter(i for row in free.tolist() for i in _until_eos(row) if i not in special | inputs)
    banned, _ = emitted.most_common(1)[0]  # the unrestricted model's favourite token from outside its inputs
    targets = [" ".join(t for t in tokenizer.convert_ids_to_tokens(_until_eos(row)) if t not in ("</s>", "<pad>"))
               for row in free.tolist()]
    word = tokenizer.convert_ids_to_tokens(banned)
    pairs = [(s, " ".join(w for w in t.split() if w != word) or "the") for s, t in zip(SOURCES, targets)]
    data = _jsonl(tmp_path / "without.jsonl", pairs)
    result = cli("export", source, "-o", tmp_path / "mapped", "--vocab-map", data, "--no-verify", "--json")
    assert result.exit_code == 0, result.stderr
    mapped = CTranslate2Model(tmp_path / "mapped")
    restricted = mapped.generate(encoded.input_ids, encoded.attention_mask, settings)
    produced = {i for row in restricted.tolist() for i in _until_eos(row)}
    assert banned not in produced
    always = {tokenizer.convert_tokens_to_ids(t) for t in (tmp_path / "mapped" / "vmap.txt").read_text().splitlines()[0].split()}
    assert produced <= always | inputs  # nothing outside the batch's allowed set
    assert CTranslate2Model(tmp_path / "mapped", vocab_map=False).generate(
        encoded.input_ids, encoded.attention_mask, settings).tolist() == free.tolist()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--vocab-map", "missing.jsonl"], "missing.jsonl"),
        (["--vocab-map", "{train}", "--target-column", "summary"], "'summary'"),
        (["--vocab-map", "{train}", "--eval-data", "missing.jsonl"], "missing.jsonl"),
        (["--eval-data", "{train}"], "give --vocab-map"),
        (["--source-column", "source"], "give --vocab-map"),
        (["--vocab-map", "{unlabeled}"], "target"),
        (["--vocab-map", "{train}", "EXISTS"], "already exists; pass --force"),
    ],
)
def test_vocab_map_bad_inputs_exit_2_and_write_nothing(args, fragment, make_checkpoint, tmp_path, cli):
    data = tmp_path / "data"
    data.mkdir()
    train = _jsonl(data / "train.jsonl", [("the dog", "dog")])
    unlabeled = data / "unlabeled.jsonl"
    unlabeled.write_text(json.dumps({"source": "the dog"}) + "\n")
    out = tmp_path / "out"
    if "EXISTS" in args:
        args = [a for a in args if a != "EXISTS"]
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    args = [a.format(train=train, unlabeled=unlabeled) for a in args]
    before = snapshot(tmp_path)
    assert_user_error(cli("export", make_checkpoint("t5"), "-o", out, "--no-verify", *args), fragment)
    assert snapshot(tmp_path) == before


def test_bench_and_eval_decode_with_the_map_unless_told_not_to(make_checkpoint, tmp_path, cli):
    source = make_checkpoint("t5")
    train = _jsonl(tmp_path / "train.jsonl", [("the quick brown fox", "fox"), ("a cat sat", "cat")])
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "mapped", vocab_map=str(train), verify=False))
    run(ExportOptions(checkpoint=str(source), output=tmp_path / "plain", verify=False))
    # the export with its map against the one without, in one run
    args = ["--batch", "2", "--beams", "2", "--source-length", "8", "--max-new-tokens", "4", "--repeats", "1",
            "--threads", "1"]
    result = cli("bench", tmp_path / "mapped", "--baseline", tmp_path / "plain", *args, "--json")
    assert result.exit_code == 0, result.stderr
    plain, mapped = result.json()["models"]
    assert plain["engine"]["vocab_map"] is None and mapped["engine"]["vocab_map"] is True
    assert mapped["speedup"] is not None
    off = cli("bench", tmp_path / "mapped", *args, "--no-vocab-map", "--json")
    assert off.json()["models"][0]["engine"]["vocab_map"] is False
    table = cli("bench", tmp_path / "mapped", "--baseline", tmp_path / "plain", *args)
    assert table.exit_code == 0 and "+vmap" in table.stdout
    for flag, expected, line in (([], True, "vocabulary map: used"), (["--no-vocab-map"], False, "not used")):
        scored = cli("eval", tmp_path / "mapped", "--data", train, "--beams", "2", "--max-new-tokens", "4", *flag,
                     "--json")
        assert scored.exit_code == 0, scored.stderr
        assert scored.json()["engine"]["vocab_map"] is expected
        printed = cli("eval", tmp_path / "mapped", "--data", train, "--beams", "2", "--max-new-tokens", "4", *flag)
        assert line in printed.stdout
