"""T5 v1.0 (ReLU FFN), T5 v1.1 / FLAN-T5 / T5-efficient / mT5 (gated-GELU FFN)."""

from __future__ import annotations

from nash_cli.arch import ArchFamily, AttentionParts, FFNParts


def _layers(model, stack):
    return getattr(model, stack).block


def _layer_prefix(stack):
    return f"{stack}.block"


def _num_layers(config, stack):
    return config.num_layers if stack == "encoder" else config.num_decoder_layers


def _set_num_layers(config, stack, n):
    if stack == "encoder":
        config.num_layers = n
    else:
        config.num_decoder_layers = n


def _layer_only_keys(stack):
    # T5 computes the relative position bias in the first layer of each stack and passes it on.
    return ("layer.0.SelfAttention.relative_attention_bias.weight",)


def _self_attention(layer):
    attention = layer.layer[0].SelfAttention
    return AttentionParts(
        q=attention.q,
        k=attention.k,
        v=attention.v,
        o=attention.o,
        num_heads=attention.n_heads,
        head_dim=attention.key_value_proj_dim,
    )


def _ffn(layer):
    dense = layer.layer[-1].DenseReluDense
    if hasattr(dense, "wi_0"):
        return FFNParts(inputs=(dense.wi_0, dense.wi_1), output=dense.wo)
    return FFNParts(inputs=(dense.wi,), output=dense.wo)


FAMILY = ArchFamily(
    name="t5",
    model_types=("t5", "mt5"),
    layers=_layers,
    layer_prefix=_layer_prefix,
    num_layers=_num_layers,
    set_num_layers=_set_num_layers,
    layer_only_keys=_layer_only_keys,
    self_attention=_self_attention,
    ffn=_ffn,
    is_gated=lambda config: bool(getattr(config, "is_gated_act", False)),
    has_bias=False,
    num_heads=lambda config, stack: config.num_heads,
    ffn_dim=lambda config, stack: config.d_ff,
    set_encoder_ffn_dim=lambda config, width: width == config.d_ff,
    generation_cache_follows_encoder=True,
)
