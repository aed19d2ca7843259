"""BART's relatives through every stage: Marian (OPUS-MT), M2M100 (NLLB), mBART-50 and Pegasus.

Each family is a tiny stock model (d_model 32, 4 heads) with the tokenizer of its kind and the
special tokens of the real checkpoints (`family_models`). Per family: the anatomy's traps
(norm order, position tables and their offsets, embedding and final norms, logits bias), the
chain select-layers -> prune-encoder -> compact (loaded by stock transformers with
`trust_remote_code=True`, equal to the masked model) -> distill, the float32 export equal to
transformers (beam-4 tokens, scores within 1e-4; dense, and compact with a layer without heads
and one without FFN units), the vocabulary map, and bench / eval on the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error
from family_models import FAMILIES, TARGET_LANGUAGE, build
from translation_tokenizers import sentences

ctranslate2 = pytest.importorskip("ctranslate2")

from nash_cli import artifact  # noqa: E402
from nash_cli.arch import family_of  # noqa: E402
from nash_cli.errors import NashError  # noqa: E402
from nash_cli.export.runtime import CTranslate2Model  # noqa: E402
from nash_cli.generation import GenerationSettings, generate_kwargs  # noqa: E402
from nash_cli.masking import apply_checkpoint_masks  # noqa: E402
from nash_cli.stages.export import ExportOptions  # noqa: E402
from nash_cli.stages.export import run as export  # noqa: E402
from nash_cli.surgery.compact import compact_model  # noqa: E402

#: Source sentences the models are run on (one of them padded in every batch).
SOURCES = sentences(8, seed=3)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """`teachers(family) -> Path`: a 3 + 2 layer checkpoint of the family (built once)."""
    cache: dict[str, Path] = {}

    def make(family: str) -> Path:
        if family not in cache:
            cache[family] = build(family, tmp_path_factory.mktemp(family) / "teacher", layers=3)[0]
        return cache[family]

    return make


def _data(path: Path, count: int, seed: int) -> Path:
    rows = sentences(count, seed=seed)
    path.write_text("".join(json.dumps({"source": s, "target": " ".join(reversed(s.split()))}) + "\n" for s in rows))
    return path


def _until_eos(row: list[int], eos: int) -> list[int]:
    tokens = row[1:]  # the decoder start
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def _assert_export_exact(source: Path, export_dir: Path) -> list[list[int]]:
    """The export's beam-4 tokens equal transformers', scores within 1e-4; returns the outputs."""
    model = artifact.load_model(source)
    tokenizer = artifact.load_tokenizer(source)
    engine = CTranslate2Model(export_dir)
    batch = tokenizer(SOURCES, padding=True, return_tensors="pt")
    assert not batch.attention_mask.all()  # a padded row: CTranslate2 gets it without the padding
    settings = GenerationSettings(num_beams=4, max_new_tokens=12)
    with torch.no_grad():  # early_stopping=True is CTranslate2's search; it has no forced EOS or banned words
        out = model.generate(**batch, early_stopping=True, forced_eos_token_id=None, bad_words_ids=None,
                             return_dict_in_generate=True, output_scores=True, **generate_kwargs(model, settings))
    got, scores = engine.generate_with_scores(batch.input_ids, batch.attention_mask, settings)
    eos = model.config.eos_token_id
    expected = [_until_eos(row, eos) for row in out.sequences.tolist()]
    # docs/export.md: right after a forced first token CTranslate2 lets no secondary beam end, so
    # an output that is the forced language alone may differ; every other output is compared
    forced = model.generation_config.forced_bos_token_id
    rows = [i for i, row in enumerate(expected) if row != [forced, eos]]
    assert len(rows) >= len(expected) - 1
    got_rows = [_until_eos(row, eos) for row in got.tolist()]
    assert [got_rows[i] for i in rows] == [expected[i] for i in rows]
    assert max(abs(scores[i] - out.sequences_scores[i].item()) for i in rows) < 1e-4
    assert len({tuple(row) for row in expected}) > 1  # not one degenerate output
    return expected


def test_an_unsupported_model_type_names_every_family():
    from types import SimpleNamespace

    with pytest.raises(NashError) as raised:
        family_of(SimpleNamespace(model_type="whisper", is_encoder_decoder=True))
    message = str(raised.value)
    assert "\n" not in message
    for name in ("T5", "FLAN-T5", "mT5", "BART", "mBART", "Marian", "OPUS-MT", "M2M100", "NLLB", "Pegasus"):
        assert name in message
    with pytest.raises(NashError, match="separate source and target vocabularies"):
        family_of(SimpleNamespace(model_type="marian", share_encoder_decoder_embeddings=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_anatomy_reads_each_familys_layout(family, teachers):
    model = artifact.load_model(teachers(family))
    arch = family_of(model)
    assert arch.name == family
    anatomy = arch.anatomy(model)
    assert anatomy.pre_norm == (family != "marian")
    for stack_name in ("encoder", "decoder"):
        stack = getattr(anatomy, stack_name)
        module = getattr(model.model, stack_name)
        assert (stack.embedding_norm is not None) == (family == "mbart")
        assert (stack.final_norm is not None) == (family != "marian")
        assert stack.sinusoidal_positions == (family != "mbart")
        assert stack.embed_scale == pytest.approx(32**0.5)
        # row 0 is position 0: the offset of 2 removed (M2M100's buffer, mBART's learned table)
        table = module.embed_positions.weights if family == "m2m_100" else module.embed_positions.weight
        offset = 2 if family in ("m2m_100", "mbart") else 0
        assert torch.equal(stack.positions, table[offset:])
    assert (anatomy.logits_bias is not None) == (family != "m2m_100")
    # Marian's and M2M100's sinusoidal tables are not saved (Pegasus saves its own); nash freezes them
    from safetensors.torch import load_file

    saved = load_file(str(teachers(family) / "model.safetensors"))
    assert any("embed_positions" in key for key in saved) == (family in ("mbart", "pegasus"))
    assert [t.requires_grad for t in arch.fixed_parameters(model)] == ([False, False] if family in ("marian", "pegasus") else [])
    # prune-vocab's rows: every vocabulary key the model has is indexed by token id
    state = model.state_dict()
    assert set(arch.vocabulary_keys) - set(state) <= {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}
    for key, dimension in arch.vocabulary_keys.items():
        if key in state:
            assert state[key].shape[dimension] == model.config.vocab_size
    assert ("final_logits_bias" in arch.vocabulary_keys) == (family != "m2m_100")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_runs_on_the_family(family, teachers, tmp_path, cli):
    """select-layers -> prune-encoder -> compact (stock load == masked) -> distill -> export ->
    bench and eval, each through the command line."""
    from transformers import AutoModelForSeq2SeqLM

    teacher = teachers(family)
    train, val = _data(tmp_path / "train.jsonl", 16, 1), _data(tmp_path / "val.jsonl", 4, 2)
    student, masked, compact, final = (tmp_path / name for name in ("student", "masked", "compact", "final"))

    def ok(*args):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
        return result

    ok("select-layers", teacher, "-k", "1", "-o", student)
    assert json.loads((student / "config.json").read_text())["decoder_layers"] == 1
    ok("prune-encoder", student, "--teacher", teacher, "--data", train, "-o", masked, "--max-steps", "6",
       "--batch-size", "4", "--target-sparsity", "0.5", "--sparsity-warmup", "2", "--lr", "1e-3")
    ok("compact", masked, "-o", compact)
    config = json.loads((compact / "config.json").read_text())
    assert config["model_type"] == family and "encoder_heads" in config
    assert (compact / "modeling_nash_bart_like.py").is_file()
    assert "nash_cli" not in (compact / "modeling_nash_bart_like.py").read_text()  # self-contained

    # stock transformers with trust_remote_code loads the copy beside the weights; equal to masked
    stock = AutoModelForSeq2SeqLM.from_pretrained(compact, trust_remote_code=True).eval()
    assert type(stock).__module__.startswith("transformers_modules")
    trained = artifact.load_model(masked)
    hooks = apply_checkpoint_masks(trained, masked)
    tokenizer = artifact.load_tokenizer(compact)
    batch = tokenizer(SOURCES[:3], padding=True, return_tensors="pt")
    start = torch.full((3, 4), trained.config.decoder_start_token_id)
    with torch.no_grad():
        a = trained(**batch, decoder_input_ids=start).logits
        b = stock(**batch, decoder_input_ids=start).logits
    assert (a - b).abs().max() < 1e-4
    settings = GenerationSettings(num_beams=4, max_new_tokens=8)
    with torch.no_grad():
        expected = trained.generate(**batch, **generate_kwargs(trained, settings))
        got = stock.generate(**batch, **generate_kwargs(stock, settings))
    assert torch.equal(expected, got)
    hooks.remove()
    if family in TARGET_LANGUAGE:  # the target language is forced as the first generated token
        assert got[:, 1].tolist() == [tokenizer.convert_tokens_to_ids(TARGET_LANGUAGE[family])] * 3

    ok("distill", compact, "--teacher", teacher, "--data", train, "-o", final, "--max-steps", "2", "--batch-size", "4")
    assert json.loads((final / "config.json").read_text())["encoder_heads"] == config["encoder_heads"]
    # training never moved a sinusoidal table (from_pretrained makes them trainable; nash freezes them)
    if family != "mbart":  # mBART's positions are learned weights
        tuned, original = artifact.load_model(final), artifact.load_model(teacher)
        for stack in ("encoder", "decoder"):
            anatomies = (family_of(m).anatomy(m) for m in (tuned, original))
            assert torch.equal(*(getattr(a, stack).positions for a in anatomies))
    ok("export", final, "-o", tmp_path / "ct2", "--quantization", "int8")
    bench = ok("bench", final, tmp_path / "ct2", "--baseline", teacher, "--batch", "2", "--beams", "2",
               "--source-length", "8", "--fixed-length", "3", "--repeats", "1", "--threads", "1", "--json").json()
    assert [m["mean_generated_length"] for m in bench["models"]] == [3.0, 3.0, 3.0]  # baseline, student, export
    for name, model in (("hf", final), ("ct2", tmp_path / "ct2")):
        result = ok("eval", model, "--data", val, "--beams", "2", "--max-new-tokens", "6", "--metric", "bleu",
                    "-o", tmp_path / "eval" / name / "metrics.json", "--json")
        assert result.json()["num_examples"] == 4


def _unequal_masks(layers: int = 3):
    """Layer 0 keeps no head, layer 1 a non-prefix subset; layer 2 keeps no FFN unit."""
    heads = torch.ones(layers, 4)
    heads[0] = 0
    heads[1, 0] = heads[1, 2] = 0
    ffn = (torch.rand(layers, 64, generator=torch.Generator().manual_seed(7)) > 0.4).float()
    ffn[2] = 0
    return heads, ffn


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_export_equals_transformers_dense_and_compact(family, teachers, tmp_path, cli):
    teacher = teachers(family)
    result = export(ExportOptions(checkpoint=str(teacher), output=tmp_path / "dense-ct2"))
    assert result.check["tokens_equal"] is True  # the load-back check (greedy, random ids)
    dense_outputs = _assert_export_exact(teacher, tmp_path / "dense-ct2")
    if family in TARGET_LANGUAGE:
        language = artifact.load_tokenizer(teacher).convert_tokens_to_ids(TARGET_LANGUAGE[family])
        assert {row[0] for row in dense_outputs} == {language}

    model = artifact.load_model(teacher)
    small, custom = compact_model(model, *_unequal_masks())
    assert custom
    compact = artifact.save_checkpoint(small, tmp_path / "compact", source=teacher, stage="compact", arguments={},
                                       state="compact")
    result = export(ExportOptions(checkpoint=str(compact), output=tmp_path / "compact-ct2"))
    assert result.padding["heads_per_layer"] == [0, 2, 4] and result.padding["zero_ffn_units"] == 1
    assert result.check["tokens_equal"] is True
    _assert_export_exact(compact, tmp_path / "compact-ct2")

    # the vocabulary map: built from training targets; the forced and control tokens stay allowed
    train = _data(tmp_path / "train.jsonl", 6, 4)
    mapped = cli("export", compact, "-o", tmp_path / "mapped", "--vocab-map", train, "--no-verify", "--json")
    assert mapped.exit_code == 0, mapped.stderr
    tokenizer = artifact.load_tokenizer(compact)
    always = set(tokenizer.convert_tokens_to_ids((tmp_path / "mapped" / "vmap.txt").read_text().splitlines()[0].split()))
    engine = CTranslate2Model(tmp_path / "mapped")
    assert engine.use_vocab_map
    batch = tokenizer(SOURCES, padding=True, return_tensors="pt")
    restricted = engine.generate(batch.input_ids, batch.attention_mask, GenerationSettings(num_beams=4, max_new_tokens=8))
    produced = {i for row in restricted.tolist() for i in row[1:]}
    assert produced <= always | set(batch.input_ids.flatten().tolist()) | {tokenizer.pad_token_id}
    if family in TARGET_LANGUAGE:
        language = tokenizer.convert_tokens_to_ids(TARGET_LANGUAGE[family])
        assert language in always and set(restricted[:, 1].tolist()) == {language}


def test_a_bad_family_checkpoint_is_one_line(tmp_path, teachers, cli):
    source = teachers("marian")
    broken = tmp_path / "separate"
    broken.mkdir()
    for item in source.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["share_encoder_decoder_embeddings"] = False
    (broken / "config.json").write_text(json.dumps(config))
    assert_user_error(cli("select-layers", broken, "-k", "1", "-o", tmp_path / "out"), "separate source and target")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["marian", "m2m_100"])
def test_a_recipe_runs_the_family_end_to_end(family, teachers, tmp_path, cli):
    """`nash run` on a post-norm family starting from its pad token and on one forcing its target
    language: select-layers, prune-encoder, compact, export, eval of the export."""
    import yaml

    train = _data(tmp_path / "train.jsonl", 16, 5)
    recipe = {
        "name": f"tiny-{family}",
        "teacher": str(teachers(family)),
        "data": {"train": str(train), "eval": str(train), "source_column": "source", "target_column": "target"},
        "stages": {
            "select_layers": {"decoder_layers": 1},
            "prune_encoder": {"target_sparsity": 0.3, "sparsity_warmup": 0.5, "max_steps": 2, "batch_size": 4},
            "compact": {},
            "export": {"quantization": "float32"},
            "eval": {"metric": ["bleu"], "beams": 2, "max_new_tokens": 6},
        },
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("run", path, "-o", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.stderr
    assert [stage["status"] for stage in result.json()["stages"]][:4] == ["done"] * 4
    export_dir = next((tmp_path / "run").glob("*-export"))
    manifest = json.loads((export_dir / "nash.json").read_text())
    assert manifest["ctranslate2"]["check"]["tokens_equal"] is True


def test_plan_times_a_family_and_writes_its_recipe(teachers, tmp_path, cli):
    result = cli("plan", teachers("m2m_100"), "--speedup", "1.2", "--batch", "2", "--beams", "1", "--source-length", "8",
                 "--new-tokens", "4", "--decoder-layers", "1,2", "--sparsities", "0,0.3", "--repeats", "1",
                 "-o", tmp_path / "plan", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["recommendation"]["decoder_layers"] in (1, 2)
    assert (tmp_path / "plan" / "recipe.yaml").is_file()
