"""BART (base and large); biases are part of every projection."""

from __future__ import annotations

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


def _stack(model, stack) -> StackParts:
    module = getattr(model.model, stack)
    config = model.config
    num_heads = int(getattr(config, f"{stack}_attention_heads"))
    decoder = stack == "decoder"
    blocks = []
    for index, layer in enumerate(module.layers):
        self_attention = _attention(layer.self_attn)
        blocks.append(
            BlockParts(
                self_attention=self_attention,
                self_attention_norm=norm_parts(layer.self_attn_layer_norm),
                cross_attention=_attention(layer.encoder_attn) if decoder else None,
                cross_attention_norm=norm_parts(layer.encoder_attn_layer_norm) if decoder else None,
                ffn=_ffn(layer),
                ffn_norm=norm_parts(layer.final_layer_norm),
                heads=tuple(range(num_heads)) if decoder else encoder_layer_heads(config, index, num_heads),
            )
        )
    positions = module.embed_positions
    scale = getattr(module.embed_tokens, "embed_scale", None)
    if scale is None:
        scale = getattr(module, "embed_scale", None)
    if scale is None:
        scale = config.d_model**0.5 if getattr(config, "scale_embedding", False) else 1.0
    return StackParts(
        embed_tokens=module.embed_tokens.weight,
        embed_scale=float(scale),
        positions=positions.weight[getattr(positions, "offset", 0) :],
        embedding_norm=norm_parts(module.layernorm_embedding),
        final_norm=norm_parts(module.layer_norm) if getattr(module, "layer_norm", None) is not None else None,
        relative_bias=None,
        relative_max_distance=None,
        num_heads=num_heads,
        blocks=tuple(blocks),
    )


def _anatomy(model) -> Anatomy:
    config = model.config
    bias = getattr(model, "final_logits_bias", None)
    return Anatomy(
        encoder=_stack(model, "encoder"),
        decoder=_stack(model, "decoder"),
        lm_head=model.lm_head.weight,
        logits_bias=bias.reshape(-1) if bias is not None else None,
        output_scale=None,
        pre_norm=False,
        rms_norm=False,
        activation=config.activation_function,
        gated=False,
        head_dim=int(config.d_model // config.encoder_attention_heads),
        query_scale=float(config.d_model // config.encoder_attention_heads) ** -0.5,
        d_model=int(config.d_model),
    )


def _set_encoder_ffn_dim(config, width):
    config.encoder_ffn_dim = width
    return True


def _ffn(layer):
    return FFNParts(inputs=(layer.fc1,), output=layer.fc2)


FAMILY = ArchFamily(
    name="bart",
    model_types=("bart",),
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
    anatomy=_anatomy,
    vocabulary_keys={
        "model.shared.weight": 0,
        "model.encoder.embed_tokens.weight": 0,
        "model.decoder.embed_tokens.weight": 0,
        "lm_head.weight": 0,
        "final_logits_bias": 1,
    },
)
