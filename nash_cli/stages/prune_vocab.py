"""`prune-vocab`: keep only the tokens a task uses, in the embeddings, the lm_head and the tokenizer.

Once the decoder is shallow, the lm_head (and beam search's softmax and top-k over the whole
vocabulary) is a large share of each generated token's cost. This stage keeps the special
tokens, every single-character or byte token (no text becomes unknown), the tokens of the
training targets (and sources, on request), and every token BPE needs to build those; it slices
the model's vocabulary rows and writes a tokenizer with the same tokens, renumbered in the order
of the original ids. The id choice and the slicing are `nash_cli.surgery.vocab`; the tokenizer's
reduction is `nash_cli.surgery.tokenizer`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import HeldOutReading
from nash_cli.errors import NashError, require_at_least, require_finite_options
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input, output_state

#: The id map written beside the weights: `{"kept_ids": [...]}`, new id i = kept_ids[i].
ID_MAP_FILE = "vocab_map.json"


@dataclass(kw_only=True)
class PruneVocabOptions(HeldOutReading, LoadOptions):
    """What `nash prune-vocab` does. The data options (`HeldOutReading`) read `data` and `eval_data`:
    the references' tokens are kept (the inputs' too with `keep_source_tokens`); the held-out
    references' coverage is reported."""

    checkpoint: str
    """A dense or compact checkpoint (a masked one must go through `nash compact` first)."""
    output: Path
    """Directory to write the reduced-vocabulary checkpoint to."""
    data: str
    """Training data whose target tokens are kept (any format `nash distill` reads)."""
    keep_source_tokens: bool = False
    """Also keep the tokens of the inputs (tasks that copy from the input: names, numbers)."""
    min_count: int = 1
    """Keep a data token only if it occurs at least this many times."""
    multiple_of: int = 64
    """Round the kept count up to a multiple of this with more whole tokens (the data's rarer
    ones, then the lowest ids): matrix kernels run faster on aligned sizes. 1 keeps exactly the
    chosen tokens."""
    force: bool = False
    """Replace the output if it exists."""

    def check(self) -> None:
        """NashError for an impossible setting (before anything is read)."""
        require_finite_options(self)
        require_at_least("--min-count", self.min_count)
        require_at_least("--multiple-of", self.multiple_of, hint=" (1 = no rounding)")
        HeldOutReading.check(self)


@dataclass
class PruneVocabResult:
    """What `run` did, for printing and JSON."""

    output: str
    """The written checkpoint."""
    vocabulary: dict[str, Any]
    """`before` (the model's rows), `tokenizer_before` (the tokenizer's tokens), `kept`, `share`
    (kept / before), `required` (specials, single characters, bytes: kept whatever the data),
    `from_data` (data tokens at or above `min_count`), `closure` (BPE parts added), `filled`
    (added to reach a multiple of `multiple_of`), `multiple_of`."""
    parameters: dict[str, dict[str, int]]
    """`{"before"|"after": nash_cli.arch.count_parameters(...)}`."""
    file_size: dict[str, int]
    """Bytes of the weight files, `before` and `after`."""
    training: dict[str, Any]
    """Over the training targets: `references`, `covered` (all tokens kept) and `exact` (of the
    covered, how many the new tokenizer tokenises to the mapped original ids)."""
    coverage: dict[str, Any] | None
    """Over `eval_data`: its references (`references`, `covered`: all tokens kept, `share`) and
    its inputs (`inputs`, `inputs_covered`, `inputs_share`); None without it."""
    id_map: str
    """The file beside the weights that lists the kept original ids."""
    seconds: float
    """Wall time."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know."""
    stage: str = "prune-vocab"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return asdict(self)


def tokenizer_document(tokenizer, source: str | Path) -> dict[str, Any]:
    """The `tokenizer.json` document of a fast tokenizer that prune-vocab can rewrite.

    Raises:
        NashError: a slow tokenizer, or a model other than Unigram, BPE or WordLevel.
    """
    from nash_cli.surgery import tokenizer as tokenizer_surgery

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise NashError(f"the tokenizer of {source} is not a fast (tokenizers) tokenizer; prune-vocab rewrites tokenizer.json")
    document = json.loads(backend.to_str())
    tokenizer_surgery.model_type(document)
    return document


@dataclass
class TokenChoice:
    """Which token ids prune-vocab keeps, and why."""

    required: set[int]
    """Ids kept whatever the data: special, config and generation-config ids, single characters."""
    chosen: list[int]
    """`required` and the data's tokens (seen `min_count` times), sorted."""
    closed: list[int]
    """`chosen` and the BPE merges' closure of it, sorted."""
    kept: list[int]
    """`closed` and the tokens that round its count up to `multiple_of`, sorted: the new
    vocabulary in old ids."""


def choose_tokens(
    document: dict[str, Any],
    tokenizer,
    config,
    counts,
    *,
    generation_config=None,
    min_count: int = 1,
    multiple_of: int = 1,
) -> TokenChoice:
    """prune-vocab's selection: what must stay, the data's tokens, the BPE closure of both, and
    enough further tokens to make the count a multiple of `multiple_of`.

    `nash plan` sizes its vocabulary candidates with this same function.

    Args:
        document: The tokenizer's `tokenizer.json` (`tokenizer_document`).
        tokenizer: The fast tokenizer (its special ids).
        config: The model config (pad, eos, decoder start ids).
        generation_config: The generation config, when the checkpoint has one (its ids).
        counts: Data token id -> occurrences (`surgery.vocab.count_tokens`).
        min_count: A data token is kept from this many occurrences.
        multiple_of: Round the kept count up to a multiple of this (the data's rarer tokens
            first, by count); never beyond the config's `vocab_size` rows.

    Returns:
        The required, chosen, closed and kept ids.
    """
    from nash_cli.surgery import tokenizer as tokenizer_surgery
    from nash_cli.surgery import vocab

    generation_ids = set()
    if generation_config is not None:
        generation_ids = vocab.config_ids(generation_config, name=_GENERATION_NAME)
        rows = getattr(config, "vocab_size", None)
        beyond = sorted(i for i in generation_ids if i < 0 or (rows is not None and i >= rows))
        if beyond:
            field = vocab.field_naming(generation_config, beyond[0])
            raise NashError(
                f"{_GENERATION_NAME}'s {field} names token {beyond[0]}, beyond the model's {rows} vocabulary rows "
                "(0..{}); fix or remove it in that file".format(rows - 1 if rows else 0)
            )
    required = (
        tokenizer_surgery.required_ids(document)
        | set(tokenizer.all_special_ids)
        | vocab.config_ids(config)
        | generation_ids
    )
    chosen = vocab.choose_kept_ids(required, counts, min_count)
    closed = tokenizer_surgery.close_ids(document, chosen)
    rarer = sorted((token for token, count in counts.items() if count < min_count), key=lambda t: (-counts[t], t))
    kept = tokenizer_surgery.fill_to_multiple(
        document, closed, multiple_of, preferred=rarer, below=getattr(config, "vocab_size", None)
    )
    return TokenChoice(required=required, chosen=chosen, closed=sorted(closed), kept=sorted(kept))


def _texts(examples, *, sources: bool) -> tuple[list[str], list[str]]:
    references = [reference for example in examples for reference in example.references]
    return references, [example.source for example in examples] if sources else []


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@releases_outputs
def run(options: PruneVocabOptions, *, progress: Progress | None = None) -> PruneVocabResult:
    """Chooses the kept tokens, slices the model, writes the model and its reduced tokenizer.

    Args:
        options: The stage's options.
        progress: Advanced through the four steps (read, choose, slice, write), each named.

    Raises:
        NashError: an existing output without `force`; a masked checkpoint; missing, empty or
            unreadable data; a tokenizer that is not a fast Unigram, BPE or WordLevel one.
    """
    from nash_cli import artifact
    from nash_cli.arch import count_parameters
    from nash_cli.data import read_examples, set_languages
    from nash_cli.surgery import tokenizer as tokenizer_surgery
    from nash_cli.surgery import vocab

    progress = progress or Progress("prune-vocab")
    started = time.perf_counter()
    options.check()
    artifact.check_output(
        options.output,
        options.force,
        inputs={"checkpoint": options.checkpoint, "data": options.data, "eval data": options.eval_data},
    )
    source = open_input(STAGE, options.checkpoint, allow_pickle=options.allow_pickle)
    load = {"allow_pickle": options.allow_pickle, "trust_remote_code": options.trust_remote_code}
    config = artifact.load_config(options.checkpoint, **load)
    progress.update(total=4, status="reading data")
    examples = read_examples(options, require_references=True)
    held_out = read_examples(options, "eval", require_references=True)
    tokenizer = artifact.load_tokenizer(options.checkpoint, trust_remote_code=options.trust_remote_code)
    document = tokenizer_document(tokenizer, options.checkpoint)
    set_languages(tokenizer, options.source_lang, options.target_lang, where=options.checkpoint)  # a code it lacks fails

    progress.advance(status="choosing tokens")
    references, sources = _texts(examples, sources=options.keep_source_tokens)
    target_ids = _encode(tokenizer, references)
    counts = vocab.count_tokens(target_ids + _encode(tokenizer, sources))
    generation = _generation_document(options.checkpoint)
    choice = choose_tokens(
        document,
        tokenizer,
        config,
        counts,
        generation_config=_as_config(generation),
        min_count=options.min_count,
        multiple_of=options.multiple_of,
    )
    required, chosen, kept = choice.required, choice.chosen, choice.kept
    kept_set = set(kept)
    from_data = {token for token, count in counts.items() if count >= options.min_count}

    progress.advance(status="slicing")
    model = artifact.load_model(options.checkpoint, config=config, **load)
    before = count_parameters(model)
    original_rows = int(model.get_input_embeddings().weight.shape[0])
    pruned = vocab.prune_vocabulary(model, kept)
    after = count_parameters(pruned)
    del model
    notes = []
    if options.multiple_of > 1 and len(kept) % options.multiple_of:
        every_token = len(kept) >= min(len(tokenizer), original_rows)
        notes.append(
            f"{len(kept):,} tokens are kept, not a multiple of {options.multiple_of}: "
            + ("the tokenizer has no more" if every_token else "no further token fits without its BPE parts overshooting")
        )
    if original_rows > len(tokenizer):
        notes.append(
            f"the model had {original_rows - len(tokenizer)} vocabulary rows with no token in its tokenizer "
            f"(ids {len(tokenizer)}..{original_rows - 1}); they are dropped"
        )

    progress.advance(status="writing")
    mapping = vocab.id_map(kept)
    with tempfile.TemporaryDirectory(prefix="nash-tokenizer-") as scratch:
        scratch_dir = Path(scratch)
        new_tokenizer = _write_tokenizer(tokenizer, tokenizer_surgery.reduce_tokenizer(document, kept), mapping, scratch_dir)
        covered = [ids for ids in target_ids if kept_set.issuperset(ids)]
        covered_texts = [text for text, ids in zip(references, target_ids, strict=True) if kept_set.issuperset(ids)]
        exact = sum(
            new == [mapping[i] for i in old]
            for new, old in zip(_encode(new_tokenizer, covered_texts), covered, strict=True)
        )
        if exact != len(covered):
            notes.append(
                f"{len(covered) - exact} of {len(covered)} covered training targets tokenise differently with the "
                "reduced tokenizer; please report this"
            )
        coverage = None
        if held_out is not None:
            held_ids = _encode(tokenizer, _texts(held_out, sources=False)[0])
            hit = sum(kept_set.issuperset(ids) for ids in held_ids)
            input_ids = _encode(tokenizer, [example.source for example in held_out])
            inputs_hit = sum(kept_set.issuperset(ids) for ids in input_ids)
            coverage = {
                "references": len(held_ids),
                "covered": hit,
                "share": hit / len(held_ids) if held_ids else None,
                "inputs": len(input_ids),
                "inputs_covered": inputs_hit,
                "inputs_share": inputs_hit / len(input_ids) if input_ids else None,
            }
            if inputs_hit < len(input_ids):
                notes.append(
                    f"{len(input_ids) - inputs_hit} of {len(input_ids)} --eval-data inputs hold dropped tokens: the reduced "
                    "tokenizer spells those words with smaller pieces, so the encoder reads a longer, different input"
                    + ("" if options.keep_source_tokens else "; --keep-source-tokens keeps the training inputs' tokens")
                )
        extra = {
            "prune_vocab": {
                "kept": len(kept),
                "vocab_size_before": original_rows,
                "id_map": ID_MAP_FILE,
                "min_count": options.min_count,
                "multiple_of": options.multiple_of,
                "keep_source_tokens": options.keep_source_tokens,
                "coverage": coverage,
            }
        }
        map_text = artifact.json_text({"kept_ids": kept, "vocab_size_before": original_rows})
        files = {ID_MAP_FILE: lambda directory: (directory / ID_MAP_FILE).write_text(map_text)}
        if generation is not None:
            # The checkpoint's own generation_config.json, renumbered: every field it holds, also
            # those transformers does not load (forced_decoder_ids), names the same tokens.
            generation_text = _renumbered_generation_text(generation, kept)
            files[GENERATION_FILE] = lambda directory: (directory / GENERATION_FILE).write_text(generation_text)
        artifact.save_checkpoint(
            pruned,
            options.output,
            source=options.checkpoint,
            stage="prune-vocab",
            arguments=arguments(options),
            state=output_state(STAGE, source.state),
            extra=extra,
            extra_files=files,
            force=options.force,
            tokenizer_source=scratch_dir,
        )
    progress.advance(status="written")
    size_before = sum(p.stat().st_size for p in artifact.weight_files(Path(options.checkpoint), allow_pickle=True))
    size_after = sum(p.stat().st_size for p in artifact.weight_files(Path(options.output)))
    return PruneVocabResult(
        output=str(options.output),
        vocabulary={
            "before": original_rows,
            "tokenizer_before": len(tokenizer),
            "kept": len(kept),
            "share": len(kept) / original_rows,
            "required": len(required),
            "from_data": len(from_data),
            "closure": len(choice.closed) - len(chosen),
            "filled": len(kept) - len(choice.closed),
            "multiple_of": options.multiple_of,
        },
        parameters={"before": before, "after": after},
        file_size={"before": size_before, "after": size_after},
        training={"references": len(target_ids), "covered": len(covered), "exact": exact},
        coverage=coverage,
        id_map=ID_MAP_FILE,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


GENERATION_FILE = "generation_config.json"
#: How refusals name the generation config.
_GENERATION_NAME = "the generation config (generation_config.json)"


def _generation_document(source: str) -> dict[str, Any] | None:
    """The checkpoint's generation_config.json as written (None without one).

    Read as JSON, not through `GenerationConfig`, which drops fields it does not know (such as
    `forced_decoder_ids`) but whose token ids still have to be kept and renumbered. It must also
    load in transformers, which `check_generation_config` asks first.

    Raises:
        NashError: an unreadable file, one that is not a JSON object, or one transformers refuses.
    """
    from nash_cli.artifact.checkpoints import read_json_object
    from nash_cli.artifact.loading import check_generation_config

    path = Path(source) / GENERATION_FILE
    if not path.is_file():
        return None
    check_generation_config(source)  # a JSON list was a TypeError; an unparsable file was ignored
    # the file check_generation_config has just read (artifact reads a file once while it is unchanged)
    return read_json_object(path, fix="re-save the checkpoint")


def _as_config(document: dict[str, Any] | None):
    """A generation config document as an object `nash_cli.surgery.vocab` reads fields of."""
    from types import SimpleNamespace

    return None if document is None else SimpleNamespace(**document)


def _renumbered_generation_text(document: dict[str, Any], kept: list[int]) -> str:
    """`document` with every token id renumbered to the kept ids (`surgery.vocab.renumber_config`)."""
    from nash_cli.surgery import vocab

    renumbered = vocab.renumber_config(_as_config(document), kept, vocab_size=False, name=_GENERATION_NAME)
    fields = {key: value for key, value in vars(renumbered).items() if value is not None or document.get(key) is None}
    return json.dumps(fields, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


#: Vocabulary files other than tokenizer.json: they would describe the original vocabulary.
_STALE_FILES = ("spiece.model", "sentencepiece.bpe.model", "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json")


def _write_tokenizer(tokenizer, document: dict[str, Any], mapping: dict[int, int], directory: Path):
    """Writes the reduced tokenizer into `directory` and returns it as AutoTokenizer loads it.

    `save_pretrained` writes the tokenizer's own config (class, special tokens); tokenizer.json is
    then replaced by the reduced document, and any SentencePiece or BPE vocabulary file is removed
    so that only the reduced vocabulary can be loaded.
    """
    from transformers import AutoTokenizer

    from nash_cli._hf import quiet_transformers
    from nash_cli.surgery.tokenizer import renumber_tokenizer_config

    with quiet_transformers():
        tokenizer.save_pretrained(directory)
    for name in _STALE_FILES:
        (directory / name).unlink(missing_ok=True)
    (directory / "tokenizer.json").write_text(json.dumps(document, ensure_ascii=False))
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = renumber_tokenizer_config(json.loads(config_path.read_text()), mapping)
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    with quiet_transformers():
        reloaded = AutoTokenizer.from_pretrained(str(directory))
    if len(reloaded) != len(mapping):
        raise NashError(
            f"the reduced tokenizer loads with {len(reloaded)} tokens instead of {len(mapping)}; "
            "its class rebuilds the vocabulary differently (please report this)"
        )
    return reloaded


STAGE = declare(Stage(name="prune_vocab", command="prune-vocab", options=PruneVocabOptions, run=run, order=60, data="train"))
