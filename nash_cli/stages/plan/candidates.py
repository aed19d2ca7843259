"""The candidates of `nash plan`: every model the pipeline could produce from the teacher.

A candidate is built with the stages' own functions: select-layers' uniform selection
(`surgery.layers`), compact under the masks prune-encoder's final step would pick
(`l0.masks_for_target`, `surgery.compact`), and prune-vocab's token choice and cut
(`stages.prune_vocab.choose_tokens`, `surgery.vocab`). What the plan does differently is said
where it does it: random pruning scores instead of trained ones, and an empty (meta) model per
candidate to count its work without building its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nash_cli.errors import NashError
from nash_cli.stages.plan.cost import Candidate, ModelShape, Workload

if TYPE_CHECKING:
    import torch

# ---------------------------------------------------------------------- vocabulary


def kept_vocabulary(tokenizer, config, targets: list[str], source: str, *, multiple_of: int = 1) -> list[int] | None:
    """The ids `nash prune-vocab --data` would keep for these targets (its own selection,
    `stages.prune_vocab.choose_tokens`, rounded up to `multiple_of`), sorted and below the
    config's `vocab_size`; None when prune-vocab cannot rewrite this tokenizer (then no
    vocabulary candidate is planned)."""
    from nash_cli.stages.prune_vocab import choose_tokens, tokenizer_document
    from nash_cli.surgery import vocab

    try:
        document = tokenizer_document(tokenizer, source)
    except NashError:
        return None
    counts = vocab.count_tokens(tokenizer(list(targets), add_special_tokens=False)["input_ids"])
    kept = choose_tokens(document, tokenizer, config, counts, multiple_of=multiple_of).kept
    return [i for i in kept if 0 <= i < config.vocab_size]


def _vocabulary_ids(candidate: Candidate, kept: Sequence[int] | None) -> list[int]:
    """The ids a vocabulary candidate keeps: `kept`, or without it the first `vocab_size` ids
    (the same shapes, which is all timing depends on)."""
    if kept is None:
        return list(range(candidate.vocab_size))
    if len(kept) != candidate.vocab_size:
        raise ValueError(f"{candidate.label} keeps {candidate.vocab_size} ids, but {len(kept)} were given")
    return list(kept)


# ---------------------------------------------------------------------- encoder masks


def _prune_structure() -> dict[str, Any]:
    from nash_cli.train.config import PruneSettings

    return {"uniform_heads": PruneSettings.uniform_heads, "ffn_multiple_of": PruneSettings.ffn_multiple_of}


#: The structure of the planned encoders, prune-encoder's default: the same number of heads in
#: every layer and FFN widths that are multiples of 64, so CTranslate2 runs each candidate as
#: narrow as it is (no zero heads); the recipe names it (`recipe_writer`).
STRUCTURE = _prune_structure()


def encoder_masks(teacher, sparsities, *, seed: int) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Per sparsity above 0, the binary (heads, FFN) masks prune-encoder's final step would pick
    (`nash_cli.l0.masks_for_target` under `STRUCTURE`) from random scores: the shapes compact
    then produces, and so the shapes an export runs.

    The scores are random because nothing is trained yet: a trained run prunes some layers more
    than others, but the totals the target fixes, and the multiply-adds with them, are the same
    (docs/plan.md, "What it does not know"); with uniform heads the head count per layer is the
    same too.

    Raises:
        NashError: a sparsity that leaves no head in a layer under uniform heads.
    """
    import torch

    from nash_cli.l0 import masks_for_target, max_uniform_heads_sparsity
    from nash_cli.masking import encoder_shape

    shape = encoder_shape(teacher)
    highest = max_uniform_heads_sparsity(shape) if STRUCTURE["uniform_heads"] else 1.0
    for s in sparsities:
        if s > highest:
            raise NashError(
                f"--sparsities {s:g} leaves no attention head: with the same number of heads in every layer the "
                f"teacher's encoder keeps at least one per layer, at most sparsity {highest:.4f}; use lower sparsities"
            )
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randn(shape.num_layers, shape.num_heads, generator=generator)
    units = torch.randn(shape.num_layers, shape.d_ff, generator=generator)
    return {s: masks_for_target(heads, units, shape, s, **STRUCTURE) for s in sparsities if s > 0}


# ---------------------------------------------------------------------- configs and models


def candidate_config(teacher, candidate: Candidate, masks, *, kept: Sequence[int] | None = None):
    """The config the pipeline would write for `candidate`: select-layers' (`surgery.layers.keep_layers`
    on the config alone), compact's (`surgery.compact.compact_config`) and prune-vocab's
    (`surgery.vocab.renumber_config`).

    Args:
        teacher: The teacher model.
        candidate: The configuration.
        masks: `encoder_masks` of the teacher, for the candidate's sparsity.
        kept: The ids of a vocabulary candidate (`kept_vocabulary`); default its first `vocab_size`.
    """
    from nash_cli.arch import family_of
    from nash_cli.surgery.compact import compact_config, plan_from_masks
    from nash_cli.surgery.layers import keep_layers, uniform_indices
    from nash_cli.surgery.vocab import renumber_config

    family = family_of(teacher)
    depth = family.num_layers(teacher.config, "decoder")
    # no weights: the config half of select-layers' surgery
    config, _ = keep_layers(family, teacher.config, {}, "decoder", uniform_indices(depth, candidate.decoder_layers))
    if candidate.encoder_sparsity > 0:
        config, _ = compact_config(config, plan_from_masks(teacher, *masks[candidate.encoder_sparsity]))
    if candidate.vocab_size is not None:
        config = renumber_config(config, _vocabulary_ids(candidate, kept))
    return config


def has_untied_head(model) -> bool:
    """Whether the lm_head is a matrix of its own (T5 v1.1 / FLAN), not the shared embedding."""
    return model.get_output_embeddings().weight is not model.get_input_embeddings().weight


def empty_model(config, *, untied_head: bool = False):
    """The model of `config` on the meta device: its shape, no memory, no weights.

    The plan's own: every candidate's parameters and work are counted from its shape, and building
    each one's weights by the surgery would spend the budget that timing needs.

    Transformers 5 builds every T5 with a tied lm_head from a config; a checkpoint that has its
    own lm_head (T5 v1.1 / FLAN) loads untied, so `untied_head` gives the empty model one too.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM

    from nash_cli import modeling
    from nash_cli._hf import quiet_transformers
    from nash_cli.arch import family_of

    with torch.device("meta"), quiet_transformers():
        if getattr(config, "encoder_heads", None) is not None:
            # a compact candidate (per-layer widths): nash's own class, as artifact.load_model uses
            model = modeling.classes(family_of(config).name)[1](config)
        else:
            model = AutoModelForSeq2SeqLM.from_config(config)
        if untied_head and not has_untied_head(model):
            model.set_output_embeddings(torch.nn.Linear(config.d_model, config.vocab_size, bias=False))
    return model


def build_candidate(teacher, candidate: Candidate, masks, *, kept: Sequence[int] | None = None):
    """The candidate as the pipeline would produce it, by the stages' surgery on the teacher's
    weights: select-layers' uniform selection, compact under the masks, and prune-vocab's cut
    (`surgery.vocab.prune_vocabulary`: tied and untied heads and BART's `final_logits_bias` alike).

    Args:
        teacher: The teacher model.
        candidate: The configuration.
        masks: `encoder_masks` of the teacher, for the candidate's sparsity.
        kept: The ids of a vocabulary candidate (`kept_vocabulary`); default its first `vocab_size`.
    """
    from nash_cli.arch import family_of
    from nash_cli.surgery.compact import compact_model
    from nash_cli.surgery.layers import select_layers, uniform_indices
    from nash_cli.surgery.vocab import prune_vocabulary

    depth = family_of(teacher).num_layers(teacher.config, "decoder")
    model = select_layers(teacher, decoder=uniform_indices(depth, candidate.decoder_layers))
    if candidate.encoder_sparsity > 0:
        model, _ = compact_model(model, *masks[candidate.encoder_sparsity])
    if candidate.vocab_size is not None:
        model = prune_vocabulary(model, _vocabulary_ids(candidate, kept))
    return model.eval()


def model_shape(model) -> ModelShape:
    """The `cost.ModelShape` of a model (real or meta)."""
    from nash_cli.arch import count_parameters, family_of

    family = family_of(model)
    params = count_parameters(model)

    def width(stack: str) -> int:
        total = 0
        for layer in family.layers(model, stack):
            attention = family.self_attention(layer)
            total += attention.num_heads * attention.head_dim
        return total

    return ModelShape(
        encoder_params=params["encoder"],
        encoder_attention_width=width("encoder"),
        decoder_layers=len(family.layers(model, "decoder")),
        decoder_params=params["decoder"],
        decoder_attention_width=width("decoder"),
        d_model=int(model.config.d_model),
        vocab_size=int(model.get_output_embeddings().weight.shape[0]),
    )


# ---------------------------------------------------------------------- the space searched


@dataclass
class CandidateSpace:
    """Every configuration considered, and what is known of each before any timing."""

    teacher: Any
    """The teacher model the candidates are cut from."""
    candidates: list[Candidate]
    """Most capacity first (`cost.candidate_grid`)."""
    masks: dict[float, Any]
    """`encoder_masks` per sparsity above 0."""
    kept: list[int] | None
    """The ids of the vocabulary candidates, when there are any."""
    work: dict[Candidate, dict[str, float]]
    """Cost-model features of every candidate (`cost.features`)."""
    parameters: dict[Candidate, dict[str, int]]
    """`nash_cli.arch.count_parameters` of every candidate."""
    teacher_work: dict[str, float]
    """Cost-model features of the teacher."""

    def build(self, candidate: Candidate):
        """The candidate's model, by the surgery (`build_candidate`)."""
        return build_candidate(self.teacher, candidate, self.masks, kept=self.kept)


def candidate_space(teacher, decoder_layers: Sequence[int], sparsities: Sequence[float], kept: list[int] | None,
                    workload: Workload, *, seed: int) -> CandidateSpace:
    """Every combination of decoder depth, encoder sparsity and vocabulary (the teacher's, and
    `kept` when given), each with its work per call and parameters read off its empty model.

    Args:
        teacher: The teacher model.
        decoder_layers: Decoder depths to consider.
        sparsities: Encoder sparsities to consider (0: not pruned).
        kept: The restricted vocabulary's ids (`kept_vocabulary`), or None for no vocabulary candidate.
        workload: The timed call (`cost.features` counts its work).
        seed: Seed of the random pruning scores (`encoder_masks`).
    """
    from nash_cli.arch import count_parameters
    from nash_cli.stages.plan import cost

    sparsities = sorted({float(s) for s in sparsities})
    vocab_sizes: list[int | None] = [None] if kept is None else [None, len(kept)]
    candidates = cost.candidate_grid(decoder_layers, sparsities, vocab_sizes)
    masks = encoder_masks(teacher, sparsities, seed=seed)
    work, parameters = {}, {}
    for c in candidates:
        shape_only = empty_model(candidate_config(teacher, c, masks, kept=kept), untied_head=has_untied_head(teacher))
        work[c] = cost.features(model_shape(shape_only), workload)
        parameters[c] = count_parameters(shape_only)
    return CandidateSpace(teacher, candidates, masks, kept, work, parameters, cost.features(model_shape(teacher), workload))
