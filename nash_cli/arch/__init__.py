"""Architecture families: the only code in nash that knows Hugging Face module and config names.

Each supported family (one module per family) exposes the same small surface, collected in
`ArchFamily`. Everything else in nash asks `family_of(model_or_config)` and works through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch
    from torch import nn

Stack = Literal["encoder", "decoder"]

#: Config (and generation config) fields that hold one token id, or a list of them (eos).
TOKEN_ID_FIELDS = (
    "pad_token_id",
    "eos_token_id",
    "bos_token_id",
    "unk_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)
#: Config fields that hold the vocabulary's size: every one present is set to the kept count
#: (Marian's `decoder_vocab_size` sizes its decoder's embedding; nash supports it only equal to
#: `vocab_size`, one vocabulary shared by both stacks).
VOCABULARY_SIZE_FIELDS = ("vocab_size", "decoder_vocab_size")
#: Generation config fields that list tokens to suppress.
GENERATION_ID_LISTS = ("suppress_tokens", "begin_suppress_tokens")
#: Generation config fields naming tokens that generation must still be able to produce: the
#: token forced at a position (`forced_decoder_ids`, `[[position, id], ...]`) and the words a
#: constrained beam search must emit (`force_words_ids`, `[[id, ...], ...]`, or alternatives
#: per word `[[[id, ...], ...], ...]`).
GENERATION_FORCED_IDS = ("forced_decoder_ids", "force_words_ids")
#: Generation config fields that ban or bias token sequences: `bad_words_ids` (`[[id, ...], ...]`)
#: and `sequence_bias` (`{(id, ...): bias}`; `{"(id, ...)": bias}` once written to JSON;
#: or `[[[id, ...], bias], ...]`).
GENERATION_ID_SEQUENCES = ("bad_words_ids", "sequence_bias")


@dataclass(frozen=True)
class AttentionParts:
    """The projections of one attention block, as the pruning code needs them."""

    q: "nn.Linear"
    """Query projection: out_features = num_heads * head_dim."""
    k: "nn.Linear"
    """Key projection."""
    v: "nn.Linear"
    """Value projection."""
    o: "nn.Linear"
    """Output projection: in_features = num_heads * head_dim; a head mask scales its input."""
    num_heads: int
    """Heads the block currently has."""
    head_dim: int
    """Size of each head (T5's d_kv; not always d_model / num_heads)."""


@dataclass(frozen=True)
class FFNParts:
    """The projections of one feed-forward block."""

    inputs: tuple["nn.Linear", ...]
    """Projections into the intermediate space (T5 gated: wi_0 and wi_1, pruned together)."""
    output: "nn.Linear"
    """Projection out of it (wo / fc2); an FFN-unit mask scales its input."""


@dataclass(frozen=True)
class NormParts:
    """One normalisation layer: T5's RMS norm (no bias, no mean) or BART's LayerNorm."""

    weight: "torch.Tensor"
    """Scale."""
    bias: "torch.Tensor | None"
    """Shift; None for an RMS norm."""
    eps: float
    """Epsilon added to the variance."""


@dataclass(frozen=True)
class BlockParts:
    """The parts of one transformer layer, in the order they run."""

    self_attention: AttentionParts
    """Self-attention projections."""
    self_attention_norm: NormParts
    """The norm around self-attention (before it in T5, after the residual in BART)."""
    cross_attention: AttentionParts | None
    """Encoder-decoder attention (decoder layers only)."""
    cross_attention_norm: NormParts | None
    """Its norm (decoder layers only)."""
    ffn: FFNParts
    """Feed-forward projections."""
    ffn_norm: NormParts
    """The norm around the FFN."""
    heads: tuple[int, ...]
    """The original head index of each of the layer's heads (a compact encoder keeps a subset)."""


@dataclass(frozen=True)
class StackParts:
    """One stack (encoder or decoder) with everything outside its layers."""

    embed_tokens: "torch.Tensor"
    """Token embedding table, `(vocab, d_model)`."""
    embed_scale: float
    """Factor applied to token embeddings (BART's sqrt(d_model) with scale_embedding; else 1)."""
    positions: "torch.Tensor | None"
    """Absolute positions, row 0 = position 0 (BART's and M2M100's offset of 2 removed): learned, or
    the model's sinusoidal table (`sinusoidal_positions`); None for T5."""
    embedding_norm: NormParts | None
    """Norm applied to the embeddings (BART's and mBART's layernorm_embedding); None without one."""
    final_norm: NormParts | None
    """Norm after the last layer (T5's final_layer_norm; the pre-norm BART relatives' layer_norm)."""
    relative_bias: "torch.Tensor | None"
    """T5's relative position bias table, `(buckets, original heads)`, computed once per stack."""
    relative_max_distance: int | None
    """T5's longest distinguished distance."""
    num_heads: int
    """Heads per layer of the unpruned stack."""
    blocks: tuple[BlockParts, ...]
    """The layers."""
    sinusoidal_positions: bool = False
    """`positions` is a fixed sinusoidal table the model computes (Marian, M2M100, Pegasus), not a
    learned weight: never trained, pruned or sliced, and maybe absent from the weights file."""


@dataclass(frozen=True)
class Anatomy:
    """A whole model in terms any engine understands: what an exporter needs and nothing HF-named."""

    encoder: StackParts
    """The encoder."""
    decoder: StackParts
    """The decoder."""
    lm_head: "torch.Tensor"
    """Output projection, `(vocab, d_model)` (T5 v1.1 / FLAN: its own values, not the embedding)."""
    logits_bias: "torch.Tensor | None"
    """Added to the logits (final_logits_bias of BART, Marian, mBART, Pegasus), `(vocab,)`."""
    output_scale: float | None
    """Factor on the decoder output before lm_head (T5 v1.0: d_model^-0.5); None for none."""
    pre_norm: bool
    """Norm before each sublayer (T5, M2M100, mBART, Pegasus) rather than after the residual (BART,
    Marian)."""
    rms_norm: bool
    """RMS norms (T5) rather than LayerNorm (BART)."""
    activation: str
    """FFN activation, as transformers names it ("relu", "gelu_new", "gelu", ...)."""
    gated: bool
    """Gated FFN (T5 v1.1 / FLAN: act(wi_0 x) * wi_1 x)."""
    head_dim: int
    """Size of every attention head."""
    query_scale: float
    """Factor on attention logits (T5: 1, no scaling; BART: head_dim^-0.5)."""
    d_model: int
    """Hidden size."""


@dataclass(frozen=True)
class ArchFamily:
    """What nash needs to know about one family of encoder-decoder models."""

    name: str
    """Family name as nash reports it: "t5", "bart", "mbart", "marian", "m2m_100" or "pegasus"."""
    model_types: tuple[str, ...]
    """`config.model_type` values this family handles."""
    layers: Callable[["nn.Module", Stack], "nn.ModuleList"]
    """The encoder's or decoder's list of layers."""
    layer_prefix: Callable[[Stack], str]
    """State-dict key prefix of that list, e.g. "decoder.block"."""
    num_layers: Callable[[object, Stack], int]
    """Depth of a stack, read from a config."""
    set_num_layers: Callable[[object, Stack, int], None]
    """Sets the depth of a stack in a config (in place)."""
    layer_only_keys: Callable[[Stack], tuple[str, ...]]
    """Key suffixes that only the stack's first layer holds (T5's relative position bias)."""
    self_attention: Callable[["nn.Module"], AttentionParts]
    """The self-attention projections of one layer."""
    ffn: Callable[["nn.Module"], FFNParts]
    """The feed-forward projections of one layer."""
    is_gated: Callable[[object], bool]
    """Whether the FFN is gated (two input projections)."""
    has_bias: bool
    """Whether linear layers carry biases (they count as prunable parameters)."""
    num_heads: Callable[[object, Stack], int]
    """Attention heads per layer of a stack in a stock config."""
    ffn_dim: Callable[[object, Stack], int]
    """FFN width of a stack in a stock config."""
    set_encoder_ffn_dim: Callable[[object, int], bool]
    """Sets the encoder's FFN width in a stock config (in place); False when the stock config
    cannot hold it apart from the decoder's (T5 has one `d_ff` for both stacks)."""
    generation_cache_follows_encoder: bool
    """Whether stock `generate()` sizes the decoder's cache by the encoder's depth (T5 does)."""
    anatomy: Callable[["nn.Module"], Anatomy]
    """The whole model as plain parts (tensors, norms, flags), for exporters."""
    vocabulary_keys: dict[str, int]
    """State-dict names of the tensors indexed by token id, with that dimension: the shared
    embedding, each stack's embed_tokens, the lm_head (rows) and the final_logits_bias of BART,
    Marian, mBART and Pegasus (`(1, vocab)`: dimension 1)."""
    refusal: Callable[[object], "str | None"] = lambda config: None
    """Why a config of this family's model type is still not supported (one line), or None."""
    fixed_parameters: Callable[["nn.Module"], tuple["torch.Tensor", ...]] = lambda model: ()
    """Parameters that are the model's computation, not weights (Marian's and Pegasus's sinusoidal
    position tables): `artifact.load_model` freezes them, since `from_pretrained` makes every
    parameter trainable and training would move a table that Marian does not even save."""


#: The families nash supports, in the words of its one-line refusal.
SUPPORTED = (
    "nash works on encoder-decoder T5, FLAN-T5, T5-efficient, mT5, BART, mBART / mBART-50, Marian (OPUS-MT), "
    "M2M100 / NLLB and Pegasus checkpoints (model types t5, mt5, bart, mbart, marian, m2m_100, pegasus)"
)


def family_of(model_or_config) -> ArchFamily:
    """Returns the family of a model or config, or raises NashError naming the model type."""
    from nash_cli.arch import bart, t5
    from nash_cli.modeling import LEGACY_MODEL_TYPES

    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if isinstance(model_type, str):
        model_type = LEGACY_MODEL_TYPES.get(model_type, model_type)  # compact outputs of earlier nash versions
    for family in (t5.FAMILY, *bart.FAMILIES):
        if model_type in family.model_types:
            reason = family.refusal(config)
            if reason:
                raise NashError(reason)
            return family
    supported = SUPPORTED
    if not model_type:
        raise NashError(f"the checkpoint's config has no model_type, so its architecture is unknown; {supported}")
    raise NashError(f"model type {model_type!r} is {_kind(config, model_type)}; {supported}")


def _kind(config, model_type: str) -> str:
    """What a model type nash does not support is, with its article ("an encoder-only model")."""
    if getattr(config, "is_encoder_decoder", False):
        return "an encoder-decoder model nash does not support"
    if not isinstance(model_type, str):  # a hand-edited config (a list, a number): no lookup
        return "not an encoder-decoder model"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # BERT-like models also have a causal-LM head class, so the masked-LM test comes first.
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "an encoder-only model (no decoder to generate with)"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "a decoder-only model (no separate encoder)"
    return "not an encoder-decoder model"


def decoder_input_ids(model, labels: "torch.Tensor") -> "torch.Tensor":
    """The decoder inputs teacher forcing feeds for `labels` (-100 where ignored): the model's own
    `prepare_decoder_input_ids_from_labels` (mBART's moves the end token to the front), else the
    labels shifted right after the decoder start token, as M2M100's forward does."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        return prepare(labels=labels)
    config = model.config
    shifted = labels.new_zeros(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = config.decoder_start_token_id
    return shifted.masked_fill(shifted == -100, config.pad_token_id)


def turn_off_layerdrop(model) -> dict[str, float]:
    """Sets the encoder's and decoder's LayerDrop probability to 0 on `model` (in place; its
    config keeps the checkpoint's values).

    BART and its relatives skip whole layers at random in training mode (`layerdrop`; M2M100's
    config defaults to 0.05). nash's training compares every student layer's hidden state with a
    teacher layer's, and under DDP a skipped layer's parameters get no gradient, so its runs train
    every layer.

    Returns:
        The probabilities that were above 0, by stack name ("encoder", "decoder").
    """
    turned_off: dict[str, float] = {}
    for stack, module in (("encoder", model.get_encoder()), ("decoder", model.get_decoder())):
        probability = float(getattr(module, "layerdrop", 0.0) or 0.0)
        if probability > 0.0:
            module.layerdrop = 0.0
            turned_off[stack] = probability
    return turned_off


def encoder_layer_heads(config, index: int, num_heads: int) -> tuple[int, ...]:
    """Original head indices kept by encoder layer `index`: nash's compact configs list them
    (`encoder_heads`); a stock config keeps all `num_heads`."""
    kept = getattr(config, "encoder_heads", None)
    if kept is None:
        return tuple(range(num_heads))
    return tuple(int(h) for h in kept[index])


def norm_parts(module, eps_attribute: str = "eps") -> NormParts:
    """The weight, bias and epsilon of a LayerNorm or T5's RMS norm (`variance_epsilon`)."""
    eps = getattr(module, eps_attribute, None)
    if eps is None:
        eps = getattr(module, "variance_epsilon")
    return NormParts(weight=module.weight, bias=getattr(module, "bias", None), eps=float(eps))


def count_parameters(model) -> dict[str, int]:
    """The parameter counts nash reports everywhere (select-layers, prune-encoder, compact, bench).

    Each tensor counts once (a tied lm_head is the shared embedding). `embeddings` are every
    `nn.Embedding` (tokens, learned positions, T5's relative-position bias tables) and a separate
    lm_head; `encoder` and `decoder` are each stack's other parameters (layers and final norms);
    `non_embedding` is `total - embeddings`, the base of the paper's whole-model sparsity.

    Returns:
        `{"total", "embeddings", "encoder", "decoder", "non_embedding"}`.
    """
    from torch import nn

    embedding_ids = {id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()}
    output = model.get_output_embeddings()
    if output is not None:
        embedding_ids.update(id(p) for p in output.parameters())
    unique = {id(p): p for p in model.parameters()}

    def stack(module) -> int:
        return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values() if id(p) not in embedding_ids)

    total = sum(p.numel() for p in unique.values())
    embeddings = sum(p.numel() for key, p in unique.items() if key in embedding_ids)
    return {
        "total": total,
        "embeddings": embeddings,
        "encoder": stack(model.get_encoder()),
        "decoder": stack(model.get_decoder()),
        "non_embedding": total - embeddings,
    }
