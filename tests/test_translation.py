"""Translation data: the translation format, `--source-lang` / `--target-lang` on the data and on the
tokenizers of the translation families (NLLB, mBART-50, Marian, Pegasus), and eval end to end."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import assert_user_error, snapshot
from translation_tokenizers import NLLB_LANGUAGES, build_tokenizer, save_tokenizer

from nash_cli.data import Example, language_codes, load_examples, set_languages, tokenize_examples
from nash_cli.data.options import InputReading
from nash_cli.errors import NashError

PAIRS = [
    {"translation": {"de": "der Hund sieht die Katze", "en": "the dog sees the cat"}, "id": 1},
    {"translation": {"de": "das Haus ist klein", "en": "the house is small"}, "id": 2},
    {"translation": {"de": "der Vogel ist rot", "en": "the bird is red"}, "id": 3},
]


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in PAIRS))
    return path


@pytest.fixture(scope="module")
def nllb_bart(tmp_path_factory):
    """A tiny random BART with the NLLB tokenizer: the language handling is the tokenizer's."""
    from nash_cli.toy import tiny_model

    path = tmp_path_factory.mktemp("nllb-bart")
    tokenizer = save_tokenizer("nllb", path)
    tiny_model("bart", vocab_size=len(tokenizer)).save_pretrained(path)
    return path


def test_translation_format_reads_its_languages_as_columns(pairs, tmp_path):
    german_to_english = [Example(p["translation"]["de"], [p["translation"]["en"]]) for p in PAIRS]
    assert load_examples(str(pairs), source_lang="de", target_lang="en") == german_to_english
    assert load_examples(str(pairs), source_column="de", target_column="en") == german_to_english
    assert load_examples(str(pairs), source_lang="en", target_lang="de")[0] == Example("the dog sees the cat", ["der Hund sieht die Katze"])
    # A tokenizer's code finds the data's language by its language part: mBART-50's de_DE is "de".
    assert load_examples(str(pairs), source_lang="de_DE", target_lang="en_XX") == german_to_english
    # Plain columns named by language, in CSV: the same options.
    flat = tmp_path / "pairs.csv"
    flat.write_text("id,de,en\n" + "".join(f'{p["id"]},{p["translation"]["de"]},{p["translation"]["en"]}\n' for p in PAIRS))
    assert load_examples(str(flat), source_lang="de", target_lang="en") == german_to_english
    # Languages the data does not name leave plain columns to the defaults (source / target ...).
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"source": "hallo", "target": "hello"}) + "\n")
    assert load_examples(str(plain), source_lang="deu_Latn", target_lang="eng_Latn") == [Example("hallo", ["hello"])]


def test_translation_data_without_the_languages_is_refused(pairs, tmp_path):
    with pytest.raises(NashError, match=r"holds translations in 'de', 'en', not 'fr' \(--target-lang\).*--target-column de"):
        load_examples(str(pairs), source_lang="de", target_lang="fr", require_references=True)
    with pytest.raises(NashError, match=r"not 'deu_Latn' \(--source-lang\).*--source-column de --source-lang deu_Latn"):
        load_examples(str(pairs), source_lang="deu_Latn", target_lang="en", require_references=True)
    with pytest.raises(NashError, match=r"holds translations in 'de', 'en'; pass --source-lang and --target-lang"):
        load_examples(str(pairs))
    flat = tmp_path / "pairs.csv"
    flat.write_text("id,de,en\n1,a,b\n")
    with pytest.raises(NashError, match=r"no column 'fr' \(--source-lang\) and no obvious source column; its columns are 'id', 'de', 'en'"):
        load_examples(str(flat), source_lang="fr", target_lang="en", require_references=True)
    with pytest.raises(NashError, match="--target-lang 'en gb' is not a language code"):
        InputReading(target_lang="en gb").check()


def test_language_codes_of_the_translation_tokenizers():
    nllb = language_codes(build_tokenizer("nllb"))
    assert nllb.kind == "codes" and list(nllb.ids) == list(NLLB_LANGUAGES)
    mbart = language_codes(build_tokenizer("mbart50"))
    assert mbart.kind == "codes" and {"de_DE", "en_XX", "fr_XX"} <= set(mbart.ids) and len(mbart.ids) == 52
    assert language_codes(build_tokenizer("marian")) is None  # a single-pair OPUS-MT model
    assert language_codes(build_tokenizer("pegasus")) is None


def test_one_discovery_names_codes_for_languages_and_tokens_for_the_vocabulary():
    from nash_cli.arch.tokenizers import language_codes as arch_codes
    from nash_cli.arch.tokenizers import tokenizer_languages

    assert language_codes is arch_codes  # nash_cli.data re-exports the one discovery
    # M2M100: the user (and src_lang) names "de", the vocabulary holds "__de__"; the class re-adds all 100.
    m2m = build_tokenizer("m2m100")
    codes = language_codes(m2m)
    assert (codes.kind, codes.tokens["de"], len(codes.ids), codes.fixed) == ("codes", "__de__", 100, frozenset(codes.ids))
    assert codes.ids["de"] == m2m.convert_tokens_to_ids("__de__")
    vocabulary = tokenizer_languages(m2m)
    assert vocabulary.codes == {f"__{code}__": index for code, index in codes.ids.items()}
    assert vocabulary.fixed == frozenset(vocabulary.codes)
    assert (vocabulary.source, vocabulary.target) == ("__en__", "__de__")
    languages = set_languages(m2m, "de", "en", where="m2m100_418M")
    assert (languages.source, languages.target) == ("de", "en")
    assert languages.forced_bos_token_id == m2m.convert_tokens_to_ids("__en__")
    # NLLB: code and token are one; nothing is fixed.
    nllb = tokenizer_languages(build_tokenizer("nllb"))
    assert list(nllb.codes) == list(NLLB_LANGUAGES) and not nllb.fixed
    assert (nllb.source, nllb.target) == ("eng_Latn", "deu_Latn")
    assert tokenizer_languages(build_tokenizer("pegasus")).codes == {}


@pytest.mark.parametrize("kind, source, target, codes", [
    ("nllb", "deu_Latn", "eng_Latn", ("deu_Latn", "eng_Latn")),
    ("nllb", "deu", "fra", ("deu_Latn", "fra_Latn")),  # the language part names one code
    ("mbart50", "de", "en", ("de_DE", "en_XX")),
])
def test_set_languages_codes_inputs_and_labels(kind, source, target, codes):
    tokenizer = build_tokenizer(kind)
    languages = set_languages(tokenizer, source, target, where="ckpt/")
    assert (languages.source, languages.target) == codes
    source_id, target_id = (tokenizer.convert_tokens_to_ids(code) for code in codes)
    assert languages.forced_bos_token_id == target_id
    (features,) = tokenize_examples([Example("der Hund", ["the dog"])], tokenizer)
    # NLLB and mBART-50 put the code first: the input carries the source's, the labels the target's.
    assert features.input_ids[0] == source_id and features.labels[0] == target_id
    assert features.input_ids[-1] == features.labels[-1] == tokenizer.eos_token_id


def test_original_mbart_codes_follow_the_text_and_nothing_is_forced(tmp_path):
    import shutil

    from transformers import MBartTokenizer
    from translation_tokenizers import _sentencepiece_model

    shutil.copy(_sentencepiece_model("bpe"), tmp_path / "sentencepiece.bpe.model")
    tokenizer = MBartTokenizer.from_pretrained(tmp_path, src_lang="en_XX", tgt_lang="ro_RO")
    languages = set_languages(tokenizer, "de", "en", where="mbart-large-cc25")
    assert (languages.source, languages.target, languages.forced_bos_token_id) == ("de_DE", "en_XX", None)
    (features,) = tokenize_examples([Example("der Hund", ["the dog"])], tokenizer)
    assert features.input_ids[-1] == tokenizer.convert_tokens_to_ids("de_DE")
    assert features.labels[-1] == tokenizer.convert_tokens_to_ids("en_XX")


def test_bad_languages_for_a_tokenizer_are_one_line_each():
    nllb = build_tokenizer("nllb")
    with pytest.raises(NashError, match=r"--target-lang 'xx_Yyyy' is not a language the tokenizer of ckpt/ knows \(3 codes, e\.g\. 'eng_Latn'"):
        set_languages(nllb, "deu_Latn", "xx_Yyyy", where="ckpt/")
    with pytest.raises(NashError, match=r"--source-lang 'de' is not a language .*closest|--source-lang 'de' is not a language .*e\.g\."):
        set_languages(nllb, "de", "eng_Latn", where="ckpt/")
    with pytest.raises(NashError, match="codes both languages of a pair; give --source-lang too"):
        set_languages(nllb, None, "eng_Latn", where="ckpt/")
    for kind in ("marian", "pegasus"):
        with pytest.raises(NashError, match=r"has no language codes, so --source-lang / --target-lang would change nothing; drop them"):
            set_languages(build_tokenizer(kind), "de", "en", where="ckpt/")
    assert set_languages(build_tokenizer("pegasus"), None, None, where="ckpt/").forced_bos_token_id is None


def test_marian_multilingual_target_token_goes_before_the_input(tmp_path):
    from transformers import MarianTokenizer

    from nash_cli.arch.tokenizers import tokenizer_languages

    save_tokenizer("marian", tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    for code in (">>fra<<", ">>deu<<"):  # what a multi-target OPUS-MT vocabulary holds
        vocab[code] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = MarianTokenizer.from_pretrained(tmp_path)
    languages = set_languages(tokenizer, "en", ">>fra<<", where="opus-mt-en-mul")
    assert (languages.target, languages.input_prefix, languages.forced_bos_token_id) == ("fra", ">>fra<< ", None)
    # prune-vocab sees the same codes as its vocabulary's tokens
    assert list(tokenizer_languages(tokenizer).codes) == [">>fra<<", ">>deu<<"]
    (example,) = languages.inputs([Example("the cat", ["le chat"])])
    assert tokenizer.convert_ids_to_tokens(tokenizer(example.source)["input_ids"])[0] == ">>fra<<"
    with pytest.raises(NashError, match=r"'spa' is not a language .*\(2 codes, e\.g\. 'fra', 'deu'\)"):
        set_languages(tokenizer, None, "spa", where="opus-mt-en-mul")


def test_eval_translates_with_the_target_code_forced(nllb_bart, pairs, tmp_path, cli):
    from nash_cli.artifact import load_model, load_tokenizer
    from nash_cli.generation import generate, resolve_settings

    out = tmp_path / "metrics.json"
    result = cli("eval", nllb_bart, "--data", pairs, "--source-lang", "deu_Latn", "--target-lang", "eng_Latn",
                 "--source-column", "de", "--target-column", "en", "-m", "bleu", "-m", "chrf",
                 "--max-new-tokens", "5", "--beams", "1", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(out.read_text())
    tokenizer = load_tokenizer(nllb_bart)
    english = tokenizer.convert_tokens_to_ids("eng_Latn")
    assert document["languages"] == {"source": "deu_Latn", "target": "eng_Latn", "forced_bos_token_id": english,
                                     "input_prefix": ""}
    assert document["generation"]["forced_bos_token_id"] == english
    assert set(document["signatures"]) == {"bleu", "chrf"}
    # The model's first generated token is the target's code (a random model would not pick it).
    model = load_model(nllb_bart)
    tokenizer.src_lang = "deu_Latn"
    batch = tokenizer([PAIRS[0]["translation"]["de"]], return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.convert_tokens_to_ids("deu_Latn")
    settings = resolve_settings(model, num_beams=1, max_new_tokens=5)
    free = generate(model, batch["input_ids"], batch["attention_mask"], settings)
    forced = generate(model, batch["input_ids"], batch["attention_mask"],
                      set_languages(tokenizer, "deu_Latn", "eng_Latn", where="x").generation(settings))
    assert free[0, 1] != english and forced[0, 1] == english
    record = json.loads((tmp_path / "generations.jsonl").read_text().splitlines()[0])
    assert record["prediction"] == tokenizer.decode(forced[0], skip_special_tokens=True).strip()


def test_a_student_trained_for_a_pair_records_it(nllb_bart, pairs, tmp_path, cli):
    # Before, distill wrote the teacher's tokenizer settings and generation config unchanged: a
    # student trained into French still decoded into the teacher's language without --target-lang.
    from transformers import AutoTokenizer, GenerationConfig

    output = tmp_path / "student"
    result = cli("distill", nllb_bart, "--teacher", nllb_bart, "--data", pairs, "--source-lang", "deu_Latn",
                 "--target-lang", "fra_Latn", "--source-column", "de", "--target-column", "en", "--max-steps", "1",
                 "-o", output)
    assert result.exit_code == 0, result.stderr
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert (tokenizer.src_lang, tokenizer.tgt_lang) == ("deu_Latn", "fra_Latn")
    french = tokenizer.convert_tokens_to_ids("fra_Latn")
    assert tokenizer(text_target="der Hund")["input_ids"][0] == french
    assert GenerationConfig.from_pretrained(output).forced_bos_token_id == french
    assert AutoTokenizer.from_pretrained(nllb_bart).tgt_lang == "deu_Latn"  # the input is untouched


def test_languages_refused_for_a_model_without_codes_before_anything_is_written(make_checkpoint, pairs, tmp_path, cli):
    t5 = make_checkpoint("t5")
    before = snapshot(tmp_path)
    result = cli("eval", t5, "--data", pairs, "--source-lang", "de", "--target-lang", "en", "-o", tmp_path / "m.json")
    assert_user_error(result, "has no language codes", "--source-column")
    result = cli("bench", t5, "--source-lang", "de", "--target-lang", "en", "--repeats", "1")
    assert_user_error(result, "--source-lang / --target-lang are the languages of texts; give --data")
    assert snapshot(tmp_path) == before


def test_recipe_gives_the_languages_to_every_stage_that_reads_data(nllb_bart, pairs, tmp_path, cli):
    recipe = {
        "name": "nllb-de-en", "teacher": str(nllb_bart),
        "data": {"train": str(pairs), "source_lang": "deu_Latn", "target_lang": "eng_Latn",
                 "source_column": "de", "target_column": "en"},
        "stages": {"select_layers": {"decoder_layers": 1}, "distill": {"epochs": 1}, "bench": {"repeats": 1},
                   "eval": {"metric": ["bleu"]}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("run", path, "-o", tmp_path / "run", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    commands = {stage["stage"]: " ".join(stage["commands"]) for stage in result.json()["stages"]}
    for stage in ("distill", "bench", "eval"):
        assert "--source-lang deu_Latn --target-lang eng_Latn" in commands[stage]
    assert "--source-lang" not in commands["select_layers"]  # it reads no data
    recipe["data"]["target_lang"] = "xx_Yyyy"
    path.write_text(yaml.safe_dump(recipe))
    result = cli("run", path, "-o", tmp_path / "run", "--dry-run")
    assert_user_error(result, "data: --target-lang 'xx_Yyyy' is not a language the tokenizer of the teacher")
    recipe["data"]["target_lang"] = "en gb"
    path.write_text(yaml.safe_dump(recipe))
    assert_user_error(cli("run", path, "-o", tmp_path / "run", "--dry-run"), "data: --target-lang 'en gb' is not a language code")
    assert not (tmp_path / "run").exists()
