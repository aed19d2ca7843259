"""`prune-vocab`: keep only the tokens a task uses, in the embeddings, the lm_head and the tokenizer.

Once the decoder is shallow, the lm_head (and beam search's softmax and top-k over the whole
vocabulary) is a large share of each generated token's cost. This stage keeps the special
tokens, every single-character or byte token (no text becomes unknown), the tokens of the
training targets (and sources: by default for translation models), the language codes a
translation needs, and every token BPE needs to build those; it slices the model's vocabulary rows
and writes a tokenizer with the same tokens, renumbered in the order of the original ids. The
choice is `tokens` (over `nash_cli.surgery.vocab`), the files `files`; the tokenizer's reduction
is `nash_cli.surgery.tokenizer` (fast tokenizers) and `nash_cli.surgery.spm_vocab` (Marian's).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nash_cli.artifact import LoadOptions, releases_outputs
from nash_cli.data import HeldOutReading
from nash_cli.errors import require_at_least, require_finite_options
from nash_cli.progress import Progress
from nash_cli.stages import Stage, arguments, declare, open_input, output_state
from nash_cli.stages.prune_vocab.tokens import TokenChoice, choose_tokens, tokenizer_document

__all__ = ["PruneVocabOptions", "PruneVocabResult", "TokenChoice", "choose_tokens", "run", "tokenizer_document"]

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
    keep_source_tokens: bool | None = None
    """Also keep the tokens of the inputs (tasks that copy from the input: names, numbers). None
    (the default): on for a translation model (a tokenizer with language codes, or a Marian model),
    whose encoder reads the source language through the embedding the pruning cuts; off otherwise."""
    keep_language: list[str] = field(default_factory=list)
    """Language codes to keep besides the target's (the forced first token) and the source's (when
    the encoder input carries it); `all` keeps every code. Without a known target language (no
    `forced_bos_token_id`, no tokenizer `tgt_lang`) and without this, every code is kept."""
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
    (added to reach a multiple of `multiple_of`), `multiple_of`, `keep_source_tokens` (as applied)
    and `languages` (None without language codes: `kept`, code -> why, and `dropped`, a count)."""
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


def _texts(examples, *, sources: bool) -> tuple[list[str], list[str]]:
    references = [reference for example in examples for reference in example.references]
    return references, [example.source for example in examples] if sources else []


def _encode(tokenizer, texts: list[str], *, target: bool = False) -> list[list[int]]:
    """The texts' token ids without special tokens; references as targets (Marian segments them
    with its target language's SentencePiece model)."""
    if not texts:
        return []
    if target:
        return tokenizer(text_target=texts, add_special_tokens=False)["input_ids"]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


@releases_outputs
def run(options: PruneVocabOptions, *, progress: Progress | None = None) -> PruneVocabResult:
    """Chooses the kept tokens, slices the model, writes the model and its reduced tokenizer.

    Args:
        options: The stage's options.
        progress: Advanced through the four steps (read, choose, slice, write), each named.

    Raises:
        NashError: an existing output without `force`; a masked checkpoint; missing, empty or
            unreadable data; a tokenizer that is neither a fast Unigram, BPE or WordLevel one nor
            Marian's; a `keep_language` code the tokenizer does not know.
    """
    from nash_cli import artifact
    from nash_cli.arch import count_parameters
    from nash_cli.arch.tokenizers import tokenizer_languages, translates
    from nash_cli.data import read_examples, set_languages
    from nash_cli.stages.prune_vocab.files import (
        GENERATION_FILE,
        as_config,
        generation_document,
        renumbered_generation_text,
        write_tokenizer,
    )
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
    keep_source = options.keep_source_tokens
    if keep_source is None:
        keep_source = translates(config, tokenizer_languages(tokenizer))
    references, sources = _texts(examples, sources=keep_source)
    target_ids = _encode(tokenizer, references, target=True)
    counts = vocab.count_tokens(target_ids + _encode(tokenizer, sources))
    generation = generation_document(options.checkpoint)
    choice = choose_tokens(
        document,
        tokenizer,
        config,
        counts,
        generation_config=as_config(generation),
        min_count=options.min_count,
        multiple_of=options.multiple_of,
        keep_language=options.keep_language,
    )
    required, chosen, kept = choice.required, choice.chosen, choice.kept
    kept_set = set(kept)
    from_data = {token for token, count in counts.items() if count >= options.min_count}
    notes: list[str] = []

    languages = None
    if choice.languages is not None:
        languages = {"kept": dict(sorted(choice.languages.why.items())), "dropped": len(choice.languages.dropped)}
        if "no target set" in choice.languages.why.values():
            notes.append(
                "no target language is set (no forced_bos_token_id in the generation config, no tgt_lang in the "
                f"tokenizer): all {len(choice.languages.why)} language codes are kept; set one, or name the codes to "
                "keep with --keep-language"
            )

    progress.advance(status="slicing")
    model = artifact.load_model(options.checkpoint, config=config, **load)
    before = count_parameters(model)
    original_rows = int(model.get_input_embeddings().weight.shape[0])
    pruned = vocab.prune_vocabulary(model, kept)
    after = count_parameters(pruned)
    del model
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
        new_tokenizer, tokenizer_notes = write_tokenizer(tokenizer, document, kept, scratch_dir)
        notes += tokenizer_notes
        covered = [ids for ids in target_ids if kept_set.issuperset(ids)]
        covered_texts = [text for text, ids in zip(references, target_ids, strict=True) if kept_set.issuperset(ids)]
        exact = sum(
            new == [mapping[i] for i in old]
            for new, old in zip(_encode(new_tokenizer, covered_texts, target=True), covered, strict=True)
        )
        if exact != len(covered):
            notes.append(
                f"{len(covered) - exact} of {len(covered)} covered training targets tokenise differently with the "
                "reduced tokenizer; please report this"
            )
        coverage = None
        if held_out is not None:
            held_ids = _encode(tokenizer, _texts(held_out, sources=False)[0], target=True)
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
                    + ("" if keep_source else "; --keep-source-tokens keeps the training inputs' tokens")
                )
        extra = {
            "prune_vocab": {
                "kept": len(kept),
                "vocab_size_before": original_rows,
                "id_map": ID_MAP_FILE,
                "min_count": options.min_count,
                "multiple_of": options.multiple_of,
                "keep_source_tokens": keep_source,
                "languages": languages,
                "coverage": coverage,
            }
        }
        map_text = artifact.json_text({"kept_ids": kept, "vocab_size_before": original_rows})
        files = {ID_MAP_FILE: lambda directory: (directory / ID_MAP_FILE).write_text(map_text)}
        if generation is not None:
            # The checkpoint's own generation_config.json, renumbered: every field it holds, also
            # those transformers does not load (forced_decoder_ids), names the same tokens.
            generation_text = renumbered_generation_text(generation, kept)
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
            "keep_source_tokens": keep_source,
            "languages": languages,
        },
        parameters={"before": before, "after": after},
        file_size={"before": size_before, "after": size_after},
        training={"references": len(target_ids), "covered": len(covered), "exact": exact},
        coverage=coverage,
        id_map=ID_MAP_FILE,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


STAGE = declare(Stage(name="prune_vocab", command="prune-vocab", options=PruneVocabOptions, run=run, order=60, data="train"))
