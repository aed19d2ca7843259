"""BART (base and large); biases are part of every projection."""

from __future__ import annotations

from nash_cli.arch import ArchFamily, AttentionParts, FFNParts


def _layers(model, stack):
    return getattr(model.model, stack).layers


def _layer_prefix(stack):
    return f"model.{stack}.layers"


def _num_layers(config, stack):
    return config.encoder_layers if stack == "encoder" else config.decoder_layers


def _set_num_layers(config, stack, n):
    setattr(config, f"{stack}_layers", n)


def _self_attention(layer):
    attention = layer.self_attn
    return AttentionParts(
        q=attention.q_proj,
        k=attention.k_proj,
        v=attention.v_proj,
        o=attention.out_proj,
        num_heads=attention.num_heads,
        head_dim=attention.head_dim,
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
)
