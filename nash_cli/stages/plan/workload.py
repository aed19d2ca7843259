"""The call `nash plan` times: its inputs and lengths, from the flags, `--data` or the teacher,
and, with `--data`, the vocabulary restriction the candidates may count on."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nash_cli.errors import NashError
from nash_cli.progress import Progress
from nash_cli.stages.plan.cost import Workload

if TYPE_CHECKING:
    from nash_cli.stages.plan import PlanOptions


@dataclass
class TimedCall:
    """One timed `generate()` call: the batch every model gets, and what is known about it."""

    batch: Any
    """The `nash_cli.timing.Batch`, renumbered for a restricted vocabulary when there is one."""
    workload: Workload
    """Batch, beams, source length and new tokens."""
    origin: dict[str, str]
    """Where the lengths came from: `source_from` and `new_tokens_from`."""
    kept: list[int] | None = None
    """The ids of the restricted vocabulary, when it is smaller than the teacher's."""
    vocabulary: dict[str, Any] | None = None
    """The restriction as `PlanResult.vocabulary` states it."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know."""


def timed_call(options: PlanOptions, teacher, tokenizer, progress: Progress) -> TimedCall:
    """The call every model is timed with, and the vocabulary restriction `--data` allows.

    Raises:
        NashError: unreadable data, fewer examples than `--batch`, a source longer than the model.
    """
    batch, new_tokens, origin, targets, sources = _inputs(options, teacher, tokenizer, progress)
    kept, vocabulary, notes = None, None, []
    if targets:
        # The recipe's prune-vocab keeps the inputs' tokens too (--keep-source-tokens), so the encoder
        # reads the pieces it was trained on; a CTranslate2 vocabulary map allows the targets' tokens
        # always and each batch's own input tokens on top, which the targets-only size approximates
        # (and is not rounded up, as prune-vocab's output is).
        from nash_cli.stages.plan.candidates import kept_vocabulary
        from nash_cli.stages.prune_vocab import PruneVocabOptions

        config = teacher.config
        transformers = options.engine == "transformers"
        restricted = kept_vocabulary(
            tokenizer, config, targets + sources if transformers else targets, options.checkpoint,
            multiple_of=PruneVocabOptions.multiple_of if transformers else 1,
        )
        if restricted is None:
            notes.append("the teacher's tokenizer is not one prune-vocab can rewrite, so no vocabulary candidate is planned")
        elif len(restricted) < config.vocab_size:
            kept = restricted
            batch = _within_vocabulary(batch, kept, tokenizer.unk_token_id)
            rule = (
                "nash prune-vocab's selection: special and config ids, every single-character piece, every token "
                "of the targets" + (" and inputs" if transformers else "") + ", and the BPE closure"
            )
            if transformers:
                rule += f", rounded up to a multiple of {PruneVocabOptions.multiple_of} tokens"
            vocabulary = {"kept": len(kept), "of": int(config.vocab_size), "targets": len(targets), "rule": rule}
    workload = Workload(batch=batch.size, beams=options.beams, source_length=int(batch.input_ids.shape[1]),
                        new_tokens=new_tokens)
    return TimedCall(batch, workload, origin, kept, vocabulary, notes)


def _inputs(options: PlanOptions, teacher, tokenizer, progress: Progress):
    """(batch, workload facts, targets, sources) for the timed calls, from the flags, `data` or the teacher."""
    import torch

    from nash_cli.batches import random_batches, text_batches

    config = teacher.config
    origin: dict[str, Any] = {}
    targets: list[str] = []
    sources: list[str] = []
    batch = None
    if options.data is not None:
        from nash_cli.data import read_examples, set_languages

        languages = set_languages(tokenizer, options.source_lang, options.target_lang, where=options.checkpoint)
        examples = languages.inputs(read_examples(options))
        targets = [reference for example in examples for reference in example.references[:1]]
        sources = [example.source for example in examples]
        if options.source_length is None:
            (batch,) = text_batches(tokenizer, sources[: options.batch],
                                    batch_size=options.batch, max_source_length=options.max_source_length)
            if batch.size < options.batch:
                raise NashError(f"{options.data} has {batch.size} examples; --batch {options.batch} needs that many")
            origin["source_from"] = f"the first {options.batch} inputs of {options.data}, padded to the longest"
    if batch is None:
        length = options.source_length or 512
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            raise NashError(f"--source-length {length} exceeds the model's {limit} positions")
        special = [getattr(config, key, None) for key in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                          "decoder_start_token_id", "unk_token_id")]
        (batch,) = random_batches(
            vocab_size=config.vocab_size, batch_size=options.batch, source_length=length,
            special_ids=special,
            eos_token_id=config.eos_token_id if isinstance(config.eos_token_id, int) else None, seed=options.seed,
        )
        origin["source_from"] = "--source-length" if options.source_length else "random tokens, 512 (the default)"
    if options.new_tokens is not None:
        new_tokens = options.new_tokens
        origin["new_tokens_from"] = "--new-tokens"
    elif options.data is not None:
        from nash_cli.generation import generate, generated_lengths, resolve_settings

        progress.update(status="the teacher's own outputs")
        settings = languages.generation(resolve_settings(teacher, num_beams=options.beams))
        with torch.inference_mode():
            sequences = generate(teacher, batch.input_ids, batch.attention_mask, settings)
        lengths = generated_lengths(sequences, teacher.generation_config.eos_token_id or config.eos_token_id)
        new_tokens = max(1, round(statistics.fmean(lengths)))
        origin["new_tokens_from"] = f"the teacher's mean output length on that batch (beams {options.beams})"
    else:
        from nash_cli.generation import resolve_settings

        new_tokens = resolve_settings(teacher, num_beams=options.beams).max_new_tokens
        origin["new_tokens_from"] = "the teacher's generation config (its length cap)"
    return batch, new_tokens, origin, targets, sources


def _within_vocabulary(batch, kept: list[int], unk: int | None):
    """The batch with ids renumbered as a restricted vocabulary would (`surgery.vocab.id_map`):
    kept ids to their rank, others to the unknown token. Timing does not depend on id values, so
    every model gets these."""
    import torch

    from nash_cli.surgery.vocab import id_map
    from nash_cli.batches import Batch

    table = torch.full((int(batch.input_ids.max()) + 1,), 0, dtype=torch.long)
    fallback = kept.index(unk) if unk in kept else 0
    table[:] = fallback
    for index, rank in id_map(kept).items():
        if index < table.shape[0]:
            table[index] = rank
    return Batch(table[batch.input_ids], batch.attention_mask)
