"""Architecture families: the only code in nash that knows Hugging Face module and config names.

Each supported family (one module per family) exposes the same small surface, collected in
`ArchFamily`. Everything else in nash asks `family_of(model_or_config)` and works through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from nash_cli.errors import NashError

if TYPE_CHECKING:
    from torch import nn

Stack = Literal["encoder", "decoder"]


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
class ArchFamily:
    """What nash needs to know about one family of encoder-decoder models."""

    name: str
    """Family name as nash reports it: "t5" or "bart"."""
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


def family_of(model_or_config) -> ArchFamily:
    """Returns the family of a model or config, or raises NashError naming the model type."""
    from nash_cli.arch import bart, t5

    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in (t5.FAMILY, bart.FAMILY):
        if model_type in family.model_types:
            return family
    if model_type in ("nash_t5", "nash_bart"):
        return t5.FAMILY if model_type == "nash_t5" else bart.FAMILY
    kind = "decoder-only" if not getattr(config, "is_encoder_decoder", False) else "unsupported encoder-decoder"
    raise NashError(
        f"model type {model_type!r} is a {kind} model; nash works on encoder-decoder T5, FLAN-T5, "
        "T5-efficient, mT5 and BART checkpoints"
    )


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
