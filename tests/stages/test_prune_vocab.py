"""`prune-vocab`: the pruned model is the original restricted to the kept tokens, and a stock checkpoint.

For T5 v1.0 (tied head), T5 gated (untied head with its own values) and BART (byte-level BPE
trained here, `final_logits_bias`): logits equal the original's at the kept ids; greedy and beam-4
generations equal the original's decoding restricted to the kept tokens (mapped ids); a BART
whose bias already rules out the dropped tokens generates the same texts unrestricted, through
`nash eval` too. `nash bench --data` gives each model its own tokenizer's ids of the same texts.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import CORPUS, assert_user_error, snapshot, write_checkpoint

TRAIN = CORPUS[:4]
HELD_OUT = ["the dog sat on the mat .", "bob will bring coffee and a zebra !"]


def _write_jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"source": text, "target": text}) + "\n" for text in texts))
    return path


def _bart_checkpoint(path: Path, *, suppress_outside: set[int] | None = None, seed: int = 0) -> Path:
    """A tiny BART with a byte-level BPE tokenizer (BART's special-token layout) and a random
    final_logits_bias; with `suppress_outside`, the bias rules out every other id."""
    from transformers import AutoModelForSeq2SeqLM

    from nash_cli.toy import tiny_config, train_byte_level_bpe

    tokenizer = train_byte_level_bpe(CORPUS + HELD_OUT)
    config = tiny_config("bart", vocab_size=len(tokenizer))
    config.pad_token_id, config.eos_token_id, config.bos_token_id = 1, 2, 0
    config.decoder_start_token_id = config.forced_eos_token_id = 2
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    model.generation_config.forced_eos_token_id = 2
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 0.5)
        if suppress_outside is not None:
            outside = torch.ones(len(tokenizer), dtype=torch.bool)
            outside[sorted(suppress_outside)] = False
            model.final_logits_bias[0, outside] = -1e4
    return write_checkpoint(path, model, tokenizer)


@pytest.fixture
def checkpoint(family, make_checkpoint, tmp_path):
    if family == "bart":
        return _bart_checkpoint(tmp_path / "bart")
    return make_checkpoint(family)


def _load(path: Path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _mask_dropped(model, kept):
    """Restricts `model`'s decoding to `kept` (what the pruned model does): -inf on every other logit."""
    dropped = torch.ones(model.config.vocab_size, dtype=torch.bool)
    dropped[kept] = False

    def hook(module, args, output):
        return output.masked_fill(dropped, float("-inf"))

    return model.get_output_embeddings().register_forward_hook(hook)


def _generate(model, ids, mask, beams):
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, num_beams=beams, do_sample=False, max_new_tokens=10)


def _prune(cli, source, tmp_path, *extra, multiple_of: int | None = 8):
    """Runs prune-vocab; the tiny vocabularies here are rounded to multiples of 8 (the default, 64,
    would keep all of them), so the filled tokens are part of every exactness check."""
    data = _write_jsonl(tmp_path / "train.jsonl", TRAIN)
    held = _write_jsonl(tmp_path / "held.jsonl", HELD_OUT)
    out = tmp_path / "small-vocab"
    rounding = () if multiple_of is None else ("--multiple-of", str(multiple_of))
    result = cli("prune-vocab", source, "--data", data, "--eval-data", held, "-o", out, "--json", *rounding, *extra)
    assert result.exit_code == 0, result.stderr
    return out, result.json()


def test_pruned_model_is_the_original_restricted_to_kept_tokens(family, checkpoint, tmp_path, cli):
    out, report = _prune(cli, checkpoint, tmp_path)
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    original, original_tokenizer = _load(checkpoint)
    pruned, tokenizer = _load(out)
    mapping = {old: new for new, old in enumerate(kept)}

    # the report
    vocabulary = report["vocabulary"]
    assert vocabulary["kept"] == len(kept) < vocabulary["before"] == original.config.vocab_size
    assert report["training"] == {"references": len(TRAIN), "covered": len(TRAIN), "exact": len(TRAIN)}
    assert report["coverage"]["references"] == 2 and report["coverage"]["covered"] == 1
    assert report["coverage"]["inputs"] == 2 and report["coverage"]["inputs_covered"] == 1
    assert any("--keep-source-tokens" in note for note in report["notes"])
    assert report["parameters"]["after"]["embeddings"] < report["parameters"]["before"]["embeddings"]
    assert report["parameters"]["after"]["non_embedding"] == report["parameters"]["before"]["non_embedding"]
    assert report["file_size"]["after"] < report["file_size"]["before"]
    manifest = json.loads((out / "nash.json").read_text())
    assert manifest["stage"] == "prune-vocab" and manifest["prune_vocab"]["kept"] == len(kept)
    assert manifest["prune_vocab"]["id_map"] == "vocab_map.json"

    # a stock checkpoint with a reduced fast tokenizer and renumbered ids
    assert json.loads((out / "config.json").read_text())["model_type"] == original.config.model_type
    assert tokenizer.is_fast and len(tokenizer) == len(kept) == pruned.config.vocab_size
    for field in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "bos_token_id", "forced_eos_token_id"):
        value = getattr(original.config, field, None)
        if value is not None:
            assert getattr(pruned.config, field) == mapping[value], field
    assert pruned.generation_config.eos_token_id == mapping[original.generation_config.eos_token_id]
    for text in TRAIN + HELD_OUT[:1]:
        before = original_tokenizer(text)["input_ids"]
        assert tokenizer(text)["input_ids"] == [mapping[i] for i in before]
        assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == original_tokenizer.decode(
            before, skip_special_tokens=True
        )

    # the vocabulary tensors: rows of the kept ids; an untied head keeps its own values
    index = torch.tensor(kept)
    assert torch.equal(pruned.get_input_embeddings().weight, original.get_input_embeddings().weight[index])
    assert torch.equal(pruned.lm_head.weight, original.lm_head.weight[index])
    if family == "t5-gated":
        assert not torch.equal(pruned.lm_head.weight, pruned.get_input_embeddings().weight)
    else:
        assert pruned.lm_head.weight is pruned.get_input_embeddings().weight
    if family == "bart":
        assert torch.equal(pruned.final_logits_bias, original.final_logits_bias[:, index])
        assert original.final_logits_bias.abs().sum() > 0

    # logits equal at the kept ids; decoding restricted to them gives the same tokens
    encoded = original_tokenizer(TRAIN, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    new_ids = ids.clone().apply_(mapping.__getitem__)
    decoder = ids[:, :5]
    with torch.no_grad():
        full = original(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder).logits
        small = pruned(input_ids=new_ids, attention_mask=mask, decoder_input_ids=new_ids[:, :5]).logits
    assert (full[..., index] - small).abs().max() < 1e-5
    hook = _mask_dropped(original, kept)
    try:
        for beams in (1, 4):
            expected = _generate(original, ids, mask, beams)
            got = _generate(pruned, new_ids, mask, beams)
            assert got.tolist() == expected.apply_(mapping.__getitem__).tolist(), beams
    finally:
        hook.remove()


def test_real_t5_vocabulary(shared_dir, tmp_path, cli):
    vocab_dir = shared_dir / "data" / "t5-vocab"
    if not (vocab_dir / "tokenizer.json").is_file():
        pytest.skip("../shared/data/t5-vocab is absent")
    from nash_cli.toy import tiny_model

    source = tmp_path / "t5"
    tiny_model("t5", vocab_size=32128, d_model=16, num_heads=2, d_ff=32, encoder_layers=1, decoder_layers=1).save_pretrained(source)
    for path in vocab_dir.iterdir():
        shutil.copy(path, source / path.name)
    out, report = _prune(cli, source, tmp_path, multiple_of=None)
    assert not (out / "spiece.model").exists()
    original, original_tokenizer = _load(source)
    pruned, tokenizer = _load(out)
    assert type(tokenizer).__name__ == "T5Tokenizer" and tokenizer.is_fast
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    mapping = {old: new for new, old in enumerate(kept)}
    assert len(tokenizer) == len(kept) == pruned.config.vocab_size < 1000
    # the default rounds the count up to a multiple of 64 with whole tokens
    assert len(kept) % 64 == 0 and report["vocabulary"]["multiple_of"] == 64 and 0 < report["vocabulary"]["filled"] < 64
    assert report["training"]["exact"] == len(TRAIN)
    assert any("28 vocabulary rows with no token" in note for note in report["notes"])
    sentinels = [f"<extra_id_{i}>" for i in range(100)]
    assert tokenizer.convert_tokens_to_ids(sentinels) == [mapping[i] for i in original_tokenizer.convert_tokens_to_ids(sentinels)]
    for text in TRAIN + HELD_OUT:
        before = original_tokenizer(text)["input_ids"]
        if set(before) <= set(kept):
            assert tokenizer(text)["input_ids"] == [mapping[i] for i in before]
    encoded = original_tokenizer(TRAIN, padding=True, return_tensors="pt")
    new_ids = encoded["input_ids"].clone().apply_(mapping.__getitem__)
    with torch.no_grad():
        full = original(**encoded, decoder_input_ids=encoded["input_ids"][:, :4]).logits
        small = pruned(input_ids=new_ids, attention_mask=encoded["attention_mask"], decoder_input_ids=new_ids[:, :4]).logits
    assert (full[..., torch.tensor(kept)] - small).abs().max() < 1e-5


def test_bart_that_never_emits_dropped_tokens_generates_the_same_texts(tmp_path, cli):
    """Unrestricted decoding: the full claim, through nash eval; and nash bench times both models
    on the same texts, each through its own tokenizer."""
    from nash_cli.toy import train_byte_level_bpe

    tokenizer = train_byte_level_bpe(CORPUS + HELD_OUT)
    allowed = {i for text in TRAIN for i in tokenizer(text)["input_ids"]} | set(tokenizer.all_special_ids)
    source = _bart_checkpoint(tmp_path / "bart", suppress_outside=allowed, seed=3)
    out, _ = _prune(cli, source, tmp_path)
    original, original_tokenizer = _load(source)
    pruned, _ = _load(out)
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    mapping = {old: new for new, old in enumerate(kept)}
    encoded = original_tokenizer(TRAIN, padding=True, return_tensors="pt")
    new_ids = encoded["input_ids"].clone().apply_(mapping.__getitem__)
    for beams in (1, 4):
        expected = _generate(original, encoded["input_ids"], encoded["attention_mask"], beams)
        got = _generate(pruned, new_ids, encoded["attention_mask"], beams)
        assert got.tolist() == expected.apply_(mapping.__getitem__).tolist(), beams

    data = tmp_path / "train.jsonl"
    predictions = {}
    for name, model in (("original", source), ("pruned", out)):
        result = cli("eval", model, "--data", data, "--beams", "4", "--max-new-tokens", "10", "--device", "cpu",
                     "-o", tmp_path / name / "metrics.json", "--json")
        assert result.exit_code == 0, result.stderr
        lines = (tmp_path / name / "generations.jsonl").read_text().splitlines()
        predictions[name] = [json.loads(line)["prediction"] for line in lines]
    assert predictions["pruned"] == predictions["original"]
    assert any(predictions["original"])

    bench = cli("bench", out, "--baseline", source, "--data", data, "--batch", "2", "--beams", "1", "--repeats", "1",
                "--max-new-tokens", "4", "--device", "cpu", "--json")
    assert bench.exit_code == 0, bench.stderr
    inputs = bench.json()["inputs"]
    assert inputs["tokenizers"] == {str(source): str(source), str(out): str(out)}
    per_model = inputs["source_tokens_mean_per_model"]
    assert per_model[str(out)] == per_model[str(source)]  # the same texts, the same number of tokens


def test_compact_checkpoint(tmp_path, tokenizer, cli):
    from nash_cli import artifact
    from nash_cli.masking import encoder_shape
    from nash_cli.surgery.compact import compact_model
    from nash_cli.toy import tiny_model

    model = tiny_model("t5-gated", vocab_size=len(tokenizer), encoder_layers=2)
    shape = encoder_shape(model)
    heads = torch.ones(shape.num_layers, shape.num_heads)
    heads[0, 1] = 0
    ffn = torch.ones(shape.num_layers, shape.d_ff)
    ffn[1, ::3] = 0
    compact, custom = compact_model(model, heads, ffn)
    assert custom
    source = write_checkpoint(tmp_path / "compact", compact, tokenizer)
    out, report = _prune(cli, source, tmp_path)
    pruned = artifact.load_model(out)
    # a compact checkpoint keeps its stock model_type; its per-layer widths survive the vocabulary cut
    assert pruned.config.model_type == "t5" and pruned.config.encoder_heads == compact.config.encoder_heads
    assert pruned.config.vocab_size == report["vocabulary"]["kept"]
    kept = torch.tensor(json.loads((out / "vocab_map.json").read_text())["kept_ids"])
    assert torch.equal(pruned.lm_head.weight, compact.lm_head.weight[kept])
    ids = torch.tensor([[int(i) for i in kept[4:9]] + [1]])
    new_ids = torch.tensor([list(range(4, 9)) + [1]])
    with torch.no_grad():
        full = compact(input_ids=ids, decoder_input_ids=ids[:, :3]).logits
        small = pruned(input_ids=new_ids, decoder_input_ids=new_ids[:, :3]).logits
    assert (full[..., kept] - small).abs().max() < 1e-5


def test_export_converts_the_pruned_checkpoint(make_checkpoint, tmp_path, cli):
    pytest.importorskip("ctranslate2")
    out, report = _prune(cli, make_checkpoint("t5-gated"), tmp_path)
    result = cli("export", out, "-o", tmp_path / "ct2", "--json")
    assert result.exit_code == 0, result.stderr
    from nash_cli.export.runtime import CTranslate2Model

    engine = CTranslate2Model(str(tmp_path / "ct2"))
    assert engine.config.vocab_size == report["vocabulary"]["kept"]


def test_keep_source_tokens_and_min_count(make_checkpoint, tmp_path, tokenizer, cli):
    source = make_checkpoint("t5")
    data = tmp_path / "pairs.jsonl"
    # "the" occurs in every target, "cat" once; "seven" only in the inputs
    data.write_text("".join(json.dumps({"source": CORPUS[5], "target": t}) + "\n" for t in CORPUS[:2]))
    seven, the, cat = tokenizer.convert_tokens_to_ids(["seven", "the", "cat"])

    def kept(name, *flags):
        result = cli("prune-vocab", source, "--data", data, "-o", tmp_path / name, "--json", "--multiple-of", "1", *flags)
        assert result.exit_code == 0, result.stderr
        return set(json.loads((tmp_path / name / "vocab_map.json").read_text())["kept_ids"])

    plain = kept("plain")
    assert {the, cat} <= plain and seven not in plain
    assert seven in kept("sources", "--keep-source-tokens")
    frequent = kept("frequent", "--min-count", "2")
    assert the in frequent and cat not in frequent


def test_multiple_of_rounds_up_with_the_data_rarer_tokens_first(make_checkpoint, tmp_path, tokenizer, cli):
    source = make_checkpoint("t5")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"source": CORPUS[5], "target": t}) + "\n" for t in CORPUS[:2]))
    data_ids = {i for text in CORPUS[:2] for i in tokenizer(text, add_special_tokens=False)["input_ids"]}

    def prune(name, *flags):
        result = cli("prune-vocab", source, "--data", data, "-o", tmp_path / name, "--min-count", "2", "--json", *flags)
        assert result.exit_code == 0, result.stderr
        kept = json.loads((tmp_path / name / "vocab_map.json").read_text())["kept_ids"]
        return kept, result.json()["vocabulary"]

    exact, report = prune("exact", "--multiple-of", "1")
    rarer = data_ids - set(exact)  # the data's tokens seen once, below --min-count 2
    assert report["filled"] == 0 and rarer
    rounded, report = prune("rounded", "--multiple-of", "8")
    assert len(rounded) % 8 == 0 and set(exact) < set(rounded) and report["filled"] == len(rounded) - len(exact) > 0
    # the rounding takes the data's rarer tokens before any other
    added = set(rounded) - set(exact)
    assert added <= rarer if len(rarer) >= len(added) else rarer <= added
    _, report = prune("all", "--multiple-of", "1000")
    assert report["kept"] == len(tokenizer)


def _split_keyed(path: Path, splits: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps({name: [{"source": t, "target": t} for t in texts] for name, texts in splits.items()}))
    return path


def test_eval_data_keyed_by_split_is_read_at_its_validation_split(make_checkpoint, tmp_path, cli):
    # As export's --eval-data and training's read it (test_export has export's side); prune-vocab
    # used to read the train split of such a file, reporting the coverage of the training data.
    keyed = _split_keyed(tmp_path / "keyed.json", {"train": TRAIN, "validation": HELD_OUT})
    data = _write_jsonl(tmp_path / "train.jsonl", TRAIN)
    result = cli("prune-vocab", make_checkpoint("t5"), "--data", data, "--eval-data", keyed, "-o", tmp_path / "out",
                 "--multiple-of", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["coverage"]["references"] == len(HELD_OUT)
    chosen = cli("prune-vocab", make_checkpoint("t5"), "--data", data, "--eval-data", keyed, "--eval-split", "train",
                 "-o", tmp_path / "out-train", "--multiple-of", "1", "--json")
    assert chosen.json()["coverage"]["references"] == len(TRAIN)


def test_recipe_plans_prune_vocab_on_the_student(tmp_path):
    from nash_cli.pipeline import plan_run
    from nash_cli.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "name": "x",
            "teacher": "t/",
            "data": {"train": "d.jsonl", "eval": "e.jsonl", "target_column": "answer"},
            "stages": {"compact": {}, "prune_vocab": {"min_count": 2, "keep_source_tokens": True}, "bench": {}},
        }
    )
    assert recipe.stages["prune_vocab"].min_count == 2
    stages = {stage.key: stage for stage in plan_run(recipe, tmp_path, inputs={"teacher": "t/", "train": "d.jsonl", "eval": "e.jsonl"})}
    kwargs = stages["prune_vocab"].kwargs
    assert kwargs["checkpoint"] == str(stages["compact"].directory)
    assert (kwargs["data"], kwargs["eval_data"], kwargs["target_column"], kwargs["min_count"]) == ("d.jsonl", "e.jsonl", "answer", 2)
    assert stages["bench"].kwargs["models"] == [str(stages["prune_vocab"].directory)]


@pytest.fixture
def masked_checkpoint(make_checkpoint, tmp_path):
    path = tmp_path / "masked"
    shutil.copytree(make_checkpoint("t5"), path)
    (path / "nash.json").write_text(json.dumps({"stage": "prune-encoder", "state": "masked"}))
    return path


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("masked", "nash compact"),
        ("missing data", "does not exist"),
        ("empty data", "is empty"),
        ("min count", "--min-count"),
        ("multiple of", "--multiple-of"),
        ("existing output", "--force"),
        ("force over a directory nash did not write", "no nash.json"),
        ("output inside the checkpoint", "is inside the checkpoint"),
        ("output over the data", "is the data"),
        ("missing column", "answer"),
        ("eval data missing", "does not exist"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(case, fragment, make_checkpoint, masked_checkpoint, tmp_path, cli):
    source = masked_checkpoint if case == "masked" else make_checkpoint("t5")
    data = _write_jsonl(tmp_path / "train.jsonl", TRAIN)
    out = tmp_path / "out"
    args = ["prune-vocab", source, "--data", data, "-o", out]
    if case == "missing data":
        args[3] = tmp_path / "nope.jsonl"
    elif case == "empty data":
        args[3] = tmp_path / "empty.jsonl"
        args[3].write_text("")
    elif case == "min count":
        args += ["--min-count", "0"]
    elif case == "multiple of":
        args += ["--multiple-of", "0"]
    elif case in ("existing output", "force over a directory nash did not write"):
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        if case.startswith("force"):
            args.append("--force")
    elif case == "output inside the checkpoint":
        args[-1] = source / "small"
    elif case == "output over the data":
        args[-1] = data
    elif case == "missing column":
        args += ["--target-column", "answer"]
    elif case == "eval data missing":
        args += ["--eval-data", tmp_path / "dev.jsonl"]
    before = snapshot(tmp_path)
    assert_user_error(cli(*args), fragment)
    assert snapshot(tmp_path) == before
    if case in ("existing output", "force over a directory nash did not write"):
        assert (out / "keep.txt").read_text() == "mine"


def _with_generation_settings(source: Path, path: Path, **settings) -> Path:
    """A copy of `source` whose generation_config.json also holds `settings`."""
    shutil.copytree(source, path)
    document = json.loads((path / "generation_config.json").read_text())
    document.update(settings)
    (path / "generation_config.json").write_text(json.dumps(document))
    return path


def test_the_generation_configs_token_ids_are_renumbered(make_checkpoint, tokenizer, tmp_path, cli):
    """bad_words_ids, forced_decoder_ids, sequence_bias, force_words_ids and the suppress lists
    name tokens by id: after prune-vocab they name the same tokens. A forced token the data
    never uses is kept; a ban or bias naming a dropped token is removed (it cannot be generated)."""
    vocabulary = tokenizer.get_vocab()
    used = [vocabulary[word] for word in ("dog", "cat")]  # in the training targets
    unused = vocabulary["coffee"]  # only in a target prune-vocab does not see
    high = max(vocabulary.values())  # a word the data never uses, forced below
    source = _with_generation_settings(
        make_checkpoint("t5"), tmp_path / "t5",
        bad_words_ids=[used, [unused]], forced_decoder_ids=[[1, high]], sequence_bias={str(tuple(used)): -2.0},
        force_words_ids=[[used[1]]], suppress_tokens=[used[0]], begin_suppress_tokens=[used[1]],
    )  # fmt: skip
    out, _ = _prune(cli, source, tmp_path, multiple_of=1)
    kept = json.loads((out / "vocab_map.json").read_text())["kept_ids"]
    mapping = {old: new for new, old in enumerate(kept)}
    assert unused not in mapping and high in mapping  # the forced token is kept, the banned one not
    generation = json.loads((out / "generation_config.json").read_text())
    new_used = [mapping[i] for i in used]
    assert new_used != used  # renumbered for real
    assert generation["bad_words_ids"] == [new_used]
    assert generation["forced_decoder_ids"] == [[1, mapping[high]]]
    assert generation["sequence_bias"] == {str(tuple(new_used)): -2.0}
    assert generation["force_words_ids"] == [[new_used[1]]]
    assert (generation["suppress_tokens"], generation["begin_suppress_tokens"]) == ([new_used[0]], [new_used[1]])
    # the pruned tokenizer reads each renumbered id as the same word
    from transformers import AutoTokenizer

    pruned_tokenizer = AutoTokenizer.from_pretrained(out)
    assert pruned_tokenizer.convert_ids_to_tokens(new_used) == ["dog", "cat"]
    assert pruned_tokenizer.convert_ids_to_tokens(mapping[high]) == tokenizer.convert_ids_to_tokens(high)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"forced_decoder_ids": [[1, 4000]]}, "forced_decoder_ids names token 4000, beyond the model's"),
        ({"bad_words_ids": "dog"}, "bad_words_ids is not a list of token-id lists"),
    ],
)
def test_a_bad_token_id_in_the_generation_config_is_refused(settings, fragment, make_checkpoint, tmp_path, cli):
    source = _with_generation_settings(make_checkpoint("t5"), tmp_path / "t5", **settings)
    data = _write_jsonl(tmp_path / "train.jsonl", TRAIN)
    before = snapshot(tmp_path)
    assert_user_error(cli("prune-vocab", source, "--data", data, "-o", tmp_path / "out"), fragment, "generation_config.json")
    assert snapshot(tmp_path) == before
