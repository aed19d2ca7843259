"""T5 v1.0 (ReLU FFN), T5 v1.1 / FLAN-T5 / T5-efficient / mT5 (gated-GELU FFN)."""

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


def _attention(attention):
    return AttentionParts(
        q=attention.q,
        k=attention.k,
        v=attention.v,
        o=attention.o,
        num_heads=attention.n_heads,
        head_dim=attention.key_value_proj_dim,
    )


def _self_attention(layer):
    return _attention(layer.layer[0].SelfAttention)


def _scales_decoder_outputs(config) -> bool:
    # transformers 5 reports tie_word_embeddings=True for every T5 and keeps whether the decoder
    # output is scaled by d_model^-0.5 in `scale_decoder_outputs` (False for T5 v1.1 / FLAN).
    scale = getattr(config, "scale_decoder_outputs", None)
    if scale is None:
        scale = getattr(config, "tie_word_embeddings", True)
    return bool(scale)


def _stack(model, stack) -> StackParts:
    module = getattr(model, stack)
    config = model.config
    blocks = []
    for index, block in enumerate(module.block):
        self_attention = _attention(block.layer[0].SelfAttention)
        decoder = stack == "decoder"
        blocks.append(
            BlockParts(
                self_attention=self_attention,
                self_attention_norm=norm_parts(block.layer[0].layer_norm),
                cross_attention=_attention(block.layer[1].EncDecAttention) if decoder else None,
                cross_attention_norm=norm_parts(block.layer[1].layer_norm) if decoder else None,
                ffn=_ffn(block),
                ffn_norm=norm_parts(block.layer[-1].layer_norm),
                heads=(
                    tuple(range(self_attention.num_heads))
                    if decoder
                    else encoder_layer_heads(config, index, config.num_heads)
                ),
            )
        )
    first = module.block[0].layer[0].SelfAttention
    return StackParts(
        embed_tokens=module.embed_tokens.weight,
        embed_scale=1.0,
        positions=None,
        embedding_norm=None,
        final_norm=norm_parts(module.final_layer_norm),
        relative_bias=first.relative_attention_bias.weight,
        relative_max_distance=int(first.relative_attention_max_distance),
        num_heads=int(config.num_heads),
        blocks=tuple(blocks),
    )


def _anatomy(model) -> Anatomy:
    config = model.config
    return Anatomy(
        encoder=_stack(model, "encoder"),
        decoder=_stack(model, "decoder"),
        lm_head=model.lm_head.weight,
        logits_bias=None,
        output_scale=config.d_model**-0.5 if _scales_decoder_outputs(config) else None,
        pre_norm=True,
        rms_norm=True,
        activation=config.dense_act_fn,
        gated=bool(config.is_gated_act),
        head_dim=int(config.d_kv),
        query_scale=1.0,
        d_model=int(config.d_model),
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
    anatomy=_anatomy,
    vocabulary_keys={
        "shared.weight": 0,
        "encoder.embed_tokens.weight": 0,
        "decoder.embed_tokens.weight": 0,
        "lm_head.weight": 0,
    },
)
