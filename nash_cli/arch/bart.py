"""BART and its relatives: Marian (OPUS-MT), M2M100 (and NLLB), mBART (and mBART-50) and Pegasus.

All five lay out their modules alike (`model.{encoder,decoder}.layers`, `self_attn`, `fc1` /
`fc2`, biases everywhere), so one parameterised module serves them. What differs from BART
(base and large) is described by a `Variant`:

* norm order: BART and Marian are post-norm; M2M100, mBART and Pegasus are pre-norm, with a
  final layer norm per stack (`layer_norm`);
* `layernorm_embedding`: BART and mBART;
* positions: BART's and mBART's are learned (offset 2); Marian's and Pegasus's are a fixed
  sinusoidal table (`embed_positions.weight`, no offset, not saved in the weights file);
  M2M100's a sinusoidal buffer (`embed_positions.weights`, offset 2, non-persistent). A
  sinusoidal table is the model's computation, not a weight: nash never trains, prunes or
  slices it, and reads it from the built module (it may be absent from the weights file);
* `final_logits_bias`: BART, Marian, mBART and Pegasus (a buffer); M2M100 has none;
* Marian's decoder starts from the pad token; M2M100 / NLLB and mBART-50 force the target
  language as the first generated token (`forced_bos_token_id`): the generation settings say
  so, nothing here needs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from nash_cli.arch import (
    Anatomy,
    ArchFamily,
    AttentionParts,
    BlockParts,
    FFNParts,
    StackParts,
    encoder_layer_heads,
    norm_parts,
)


def _layers(model, stack):
    return getattr(model.model, stack).layers


def _layer_prefix(stack):
    return f"model.{stack}.layers"


def _num_layers(config, stack):
    return config.encoder_layers if stack == "encoder" else config.decoder_layers


def _set_num_layers(config, stack, n):
    setattr(config, f"{stack}_layers", n)


def _attention(attention):
    return AttentionParts(
        q=attention.q_proj,
        k=attention.k_proj,
        v=attention.v_proj,
        o=attention.out_proj,
        num_heads=attention.num_heads,
        head_dim=attention.head_dim,
    )


def _self_attention(layer):
    return _attention(layer.self_attn)


def _set_encoder_ffn_dim(config, width):
    config.encoder_ffn_dim = width
    return True


def _ffn(layer):
    return FFNParts(inputs=(layer.fc1,), output=layer.fc2)


@dataclass(frozen=True)
class Variant:
    """How one BART relative differs from BART."""

    model_type: str
    """`config.model_type`, also the family's name."""
    pre_norm: bool
    """Norm before each sublayer, and a final norm per stack."""
    sinusoidal: bool
    """Positions are a fixed sinusoidal table rather than learned."""
    logits_bias: bool
    """The model adds a `final_logits_bias`."""


def _positions(module):
    """The position table with row 0 = position 0: learned or sinusoidal, offset removed."""
    positions = module.embed_positions
    # M2M100 keeps its sinusoidal table in a buffer named `weights`; the others are embeddings.
    table = positions.weights if hasattr(positions, "weights") else positions.weight
    return table[getattr(positions, "offset", 0) :]


def _embed_scale(module, config) -> float:
    # M2M100 and mBART scale inside their embedding module; Marian and Pegasus in the stack.
    scale = getattr(module.embed_tokens, "embed_scale", None)
    if scale is None:
        scale = getattr(module, "embed_scale", None)
    if scale is None:
        scale = config.d_model**0.5 if getattr(config, "scale_embedding", False) else 1.0
    return float(scale)


def _stack(model, stack, variant: Variant) -> StackParts:
    module = getattr(model.model, stack)
    config = model.config
    num_heads = int(getattr(config, f"{stack}_attention_heads"))
    decoder = stack == "decoder"
    blocks = []
    for index, layer in enumerate(module.layers):
        blocks.append(
            BlockParts(
                self_attention=_attention(layer.self_attn),
                self_attention_norm=norm_parts(layer.self_attn_layer_norm),
                cross_attention=_attention(layer.encoder_attn) if decoder else None,
                cross_attention_norm=norm_parts(layer.encoder_attn_layer_norm) if decoder else None,
                ffn=_ffn(layer),
                ffn_norm=norm_parts(layer.final_layer_norm),
                heads=tuple(range(num_heads)) if decoder else encoder_layer_heads(config, index, num_heads),
            )
        )
    embedding_norm = getattr(module, "layernorm_embedding", None)
    final_norm = getattr(module, "layer_norm", None)
    return StackParts(
        embed_tokens=module.embed_tokens.weight,
        embed_scale=_embed_scale(module, config),
        positions=_positions(module),
        embedding_norm=norm_parts(embedding_norm) if embedding_norm is not None else None,
        final_norm=norm_parts(final_norm) if final_norm is not None else None,
        relative_bias=None,
        relative_max_distance=None,
        num_heads=num_heads,
        blocks=tuple(blocks),
        sinusoidal_positions=variant.sinusoidal,
    )


def _anatomy(variant: Variant):
    def anatomy(model) -> Anatomy:
        config = model.config
        bias = getattr(model, "final_logits_bias", None) if variant.logits_bias else None
        head_dim = int(config.d_model // config.encoder_attention_heads)
        return Anatomy(
            encoder=_stack(model, "encoder", variant),
            decoder=_stack(model, "decoder", variant),
            lm_head=model.lm_head.weight,
            logits_bias=bias.reshape(-1) if bias is not None else None,
            output_scale=None,
            pre_norm=variant.pre_norm,
            rms_norm=False,
            activation=config.activation_function,
            gated=False,
            head_dim=head_dim,
            query_scale=float(head_dim) ** -0.5,
            d_model=int(config.d_model),
        )

    return anatomy


def _sinusoidal_tables(model) -> tuple:
    # M2M100's table is a buffer already; Marian's and Pegasus's are frozen nn.Embedding weights
    # that from_pretrained makes trainable again.
    from torch import nn

    tables = (getattr(model.model, stack).embed_positions for stack in ("encoder", "decoder"))
    return tuple(table.weight for table in tables if isinstance(getattr(table, "weight", None), nn.Parameter))


def _marian_refusal(config) -> str | None:
    if getattr(config, "share_encoder_decoder_embeddings", True) is False:
        return (
            "this Marian checkpoint has separate source and target vocabularies "
            "(share_encoder_decoder_embeddings: false), which nash does not support; use an OPUS-MT "
            "checkpoint with one shared vocabulary"
        )
    return None


def _family(variant: Variant) -> ArchFamily:
    vocabulary = {
        "model.shared.weight": 0,
        "model.encoder.embed_tokens.weight": 0,
        "model.decoder.embed_tokens.weight": 0,
        "lm_head.weight": 0,
    }
    if variant.logits_bias:
        vocabulary["final_logits_bias"] = 1
    return ArchFamily(
        name=variant.model_type,
        model_types=(variant.model_type,),
        layers=_layers,
        layer_prefix=_layer_prefix,
        num_layers=_num_layers,
        set_num_layers=_set_num_layers,
        layer_only_keys=lambda stack: (),
        self_attention=_self_attention,
        ffn=_ffn,
        is_gated=lambda config: False,
        has_bias=True,
        num_heads=lambda config, stack: getattr(config, f"{stack}_attention_heads"),
        ffn_dim=lambda config, stack: getattr(config, f"{stack}_ffn_dim"),
        set_encoder_ffn_dim=_set_encoder_ffn_dim,
        generation_cache_follows_encoder=False,
        anatomy=_anatomy(variant),
        vocabulary_keys=vocabulary,
        refusal=_marian_refusal if variant.model_type == "marian" else (lambda config: None),
        fixed_parameters=_sinusoidal_tables if variant.sinusoidal else (lambda model: ()),
    )


BART = _family(Variant("bart", pre_norm=False, sinusoidal=False, logits_bias=True))
MARIAN = _family(Variant("marian", pre_norm=False, sinusoidal=True, logits_bias=True))
M2M100 = _family(Variant("m2m_100", pre_norm=True, sinusoidal=True, logits_bias=False))
MBART = _family(Variant("mbart", pre_norm=True, sinusoidal=False, logits_bias=True))
PEGASUS = _family(Variant("pegasus", pre_norm=True, sinusoidal=True, logits_bias=True))

#: The families of this module, in the order nash names them.
FAMILIES = (BART, MBART, MARIAN, M2M100, PEGASUS)
