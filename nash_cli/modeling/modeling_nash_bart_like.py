# Copyright the nash authors. Apache-2.0.
"""BART and its relatives with per-layer encoder widths: compacted BART, Marian, M2M100 / NLLB, mBART
and Pegasus.

This file is self-contained: it needs only torch and transformers (no nash). `nash compact`
copies it into its output and names the family's classes in the config's `auto_map`, so

    AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)

loads the model anywhere. The config keeps the stock model type ("bart", "marian", "m2m_100",
"mbart" or "pegasus"), so `AutoTokenizer.from_pretrained(path)` needs no code and asks nothing, and a
stock load without `trust_remote_code` builds a stock model that refuses these weights (size
mismatch) instead of running wrong. nash imports the same file from its package for any such
config with `encoder_heads`, so it loads these checkpoints without remote code.

One file serves the five families: their encoders are BART's, module for module, and differ only
in the order of norms and residuals (BART and Marian are post-norm, the others pre-norm), which the
stock layer's `forward` keeps; this file changes only widths. (Compact BART checkpoints of earlier
nash versions carry their own `modeling_nash_bart.py`, whose classes compute the same.)

What differs from the stock classes:

* `config.encoder_heads[l]` lists the original head indices that encoder layer l keeps (their
  count sets the layer's width; heads keep their original size d_model / encoder_attention_heads),
  and `config.encoder_ffn_dims[l]` its FFN width.
* A layer that keeps no heads skips attention: the sublayer's output is its output projection's
  bias alone, as in the masked model. With `output_attentions` (eager attention) such a layer
  reports an empty `(batch, 0, length, length)` tensor. A layer that keeps no FFN units has
  zero-width projections, whose stock product is the output bias alone, again as masked.
* The parameters of a skipped sublayer (its zero-width projections; not the output bias it
  still adds) are buffers, not parameters (the same names, still saved and loaded), and a
  pre-norm layer's norm in front of a skipped attention is added times 0 while training: DDP
  with `find_unused_parameters=False` fails on parameters that never receive a gradient.
* A legacy `gradient_checkpointing: true` in the config turns checkpointing on for these
  encoder layers too, as the stock classes do for their own.
"""

from __future__ import annotations

import warnings

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BartConfig, M2M100Config, MarianConfig, MBartConfig, PegasusConfig
from transformers.models.bart.modeling_bart import BartAttention, BartEncoder, BartForConditionalGeneration, BartModel
from transformers.models.m2m_100.modeling_m2m_100 import (
    M2M100Attention,
    M2M100Encoder,
    M2M100ForConditionalGeneration,
    M2M100Model,
)
from transformers.models.marian.modeling_marian import MarianAttention, MarianEncoder, MarianModel, MarianMTModel
from transformers.models.mbart.modeling_mbart import (
    MBartAttention,
    MBartEncoder,
    MBartForConditionalGeneration,
    MBartModel,
)
from transformers.models.pegasus.modeling_pegasus import (
    PegasusAttention,
    PegasusEncoder,
    PegasusForConditionalGeneration,
    PegasusModel,
)


class _Widths:
    """The per-layer width accessors every config class here shares."""

    def encoder_layer_heads(self, index: int) -> list[int]:
        """Original head indices kept by encoder layer `index` (all heads when unset)."""
        if self.encoder_heads is None:
            return list(range(self.encoder_attention_heads))
        return [int(h) for h in self.encoder_heads[index]]

    def encoder_layer_ffn(self, index: int) -> int:
        """FFN width of encoder layer `index` (`encoder_ffn_dim` when unset)."""
        if self.encoder_ffn_dims is None:
            return self.encoder_ffn_dim
        return int(self.encoder_ffn_dims[index])


# Each config keeps its stock model type: AutoTokenizer (and every Auto class) first reads the
# config with AutoConfig, which prompts "run the custom code? [y/N]" for a model type stock
# transformers does not know; `trust_remote_code=True` still selects these classes by `auto_map`.
@strict
class NashBartConfig(BartConfig, _Widths):
    """BartConfig plus the kept heads and FFN width of every encoder layer."""

    model_type = "bart"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None


@strict
class NashMarianConfig(MarianConfig, _Widths):
    """MarianConfig plus the kept heads and FFN width of every encoder layer."""

    model_type = "marian"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None


@strict
class NashM2M100Config(M2M100Config, _Widths):
    """M2M100Config (M2M100, NLLB) plus the kept heads and FFN width of every encoder layer."""

    model_type = "m2m_100"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None


@strict
class NashMBartConfig(MBartConfig, _Widths):
    """MBartConfig (mBART, mBART-50) plus the kept heads and FFN width of every encoder layer."""

    model_type = "mbart"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None


@strict
class NashPegasusConfig(PegasusConfig, _Widths):
    """PegasusConfig plus the kept heads and FFN width of every encoder layer."""

    model_type = "pegasus"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None


def _freeze(*owners: tuple[nn.Module, str]) -> None:
    """Turns parameters that compute nothing, given as (module, name), into buffers of the same names.

    Not `requires_grad_(False)`: `from_pretrained` makes every loaded tensor trainable again.
    """
    for owner, name in owners:
        parameter = owner._parameters.pop(name, None)
        if parameter is not None:
            owner.register_buffer(name, parameter.data)


def _linear(n_in: int, n_out: int, like: nn.Linear) -> nn.Linear:
    with warnings.catch_warnings():
        # A fully pruned layer has zero-width projections; torch warns that initialising them is a no-op.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(n_in, n_out, bias=like.bias is not None, device=like.weight.device, dtype=like.weight.dtype)


class _NarrowAttention:
    """Encoder self-attention with `num_heads` heads of the original size (mixed into a family's class)."""

    def narrow(self, num_heads: int) -> None:
        """Rebuilds the projections for `num_heads` heads (their weights are loaded afterwards)."""
        self.num_heads = num_heads
        inner = num_heads * self.head_dim
        self.q_proj = _linear(self.embed_dim, inner, self.q_proj)
        self.k_proj = _linear(self.embed_dim, inner, self.k_proj)
        self.v_proj = _linear(self.embed_dim, inner, self.v_proj)
        self.out_proj = _linear(inner, self.embed_dim, self.out_proj)
        if num_heads == 0:
            projections = (self.q_proj, self.k_proj, self.v_proj)
            _freeze(*((p, n) for p in projections for n in ("weight", "bias")), (self.out_proj, "weight"))

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        if self.num_heads > 0:
            return super().forward(hidden_states, attention_mask=attention_mask, **kwargs)
        # No heads: the output is the output projection's bias alone. Still a call of this module,
        # so `output_attentions` records an (empty) entry for the layer.
        bias = self.out_proj.bias
        output = torch.zeros_like(hidden_states) if bias is None else bias.to(hidden_states.dtype).expand_as(hidden_states)
        if self.training:
            # Pre-norm layers normalise the input of this (skipped) attention: times 0 gives that
            # norm a zero gradient instead of none, and changes no value.
            output = output + hidden_states * 0
        weights = None
        if self.config._attn_implementation == "eager":
            batch, length = hidden_states.shape[:2]
            weights = hidden_states.new_zeros((batch, 0, length, length))
        return output, weights


class NashBartAttention(_NarrowAttention, BartAttention):
    """BART encoder self-attention with its own number of heads."""


class NashMarianAttention(_NarrowAttention, MarianAttention):
    """Marian encoder self-attention with its own number of heads."""


class NashM2M100Attention(_NarrowAttention, M2M100Attention):
    """M2M100 encoder self-attention with its own number of heads."""


class NashMBartAttention(_NarrowAttention, MBartAttention):
    """mBART encoder self-attention with its own number of heads."""


class NashPegasusAttention(_NarrowAttention, PegasusAttention):
    """Pegasus encoder self-attention with its own number of heads."""


def _narrow_layers(encoder: nn.Module, config, attention_class: type) -> None:
    """Gives each stock encoder layer the heads and FFN width its config lists (in place).

    The stock layer's `forward` stays: a zero-width FFN computes its output bias alone.
    """
    for index, layer in enumerate(encoder.layers):
        attention = attention_class(
            embed_dim=config.d_model,
            num_heads=config.encoder_attention_heads,
            dropout=config.attention_dropout,
            config=config,
            layer_idx=index,
        )
        attention.narrow(len(config.encoder_layer_heads(index)))
        layer.self_attn = attention
        width = config.encoder_layer_ffn(index)
        layer.fc1 = _linear(config.d_model, width, layer.fc1)
        layer.fc2 = _linear(width, config.d_model, layer.fc2)
        if width == 0:
            _freeze((layer.fc1, "weight"), (layer.fc1, "bias"), (layer.fc2, "weight"))


def _legacy_checkpointing(config) -> bool:
    # The stock __init__ consumes a legacy `gradient_checkpointing: true` (and deletes it from the
    # config) before the nash model replaces the stock one; `_restore_checkpointing` applies it again.
    return bool(getattr(config, "gradient_checkpointing", False))


def _restore_checkpointing(model, legacy: bool) -> None:
    if legacy:
        model.config.gradient_checkpointing = True
        model._backward_compatibility_gradient_checkpointing()


class NashBartEncoder(BartEncoder):
    """BART's encoder with per-layer widths (the forward is the stock one)."""

    def __init__(self, config):
        super().__init__(config)
        _narrow_layers(self, config, NashBartAttention)
        self.post_init()


class NashBartModel(BartModel):
    """BartModel with a `NashBartEncoder`."""

    config_class = NashBartConfig

    def __init__(self, config):
        super().__init__(config)
        self.encoder = NashBartEncoder(config)
        self.post_init()


class NashBartForConditionalGeneration(BartForConditionalGeneration):
    """BartForConditionalGeneration whose encoder layers have their own widths."""

    config_class = NashBartConfig

    def __init__(self, config):
        legacy = _legacy_checkpointing(config)
        super().__init__(config)
        self.model = NashBartModel(config)
        self.post_init()
        _restore_checkpointing(self, legacy)


class NashMarianEncoder(MarianEncoder):
    """Marian's encoder with per-layer widths (the forward is the stock one)."""

    def __init__(self, config):
        super().__init__(config)
        _narrow_layers(self, config, NashMarianAttention)
        self.post_init()


class NashMarianModel(MarianModel):
    """MarianModel with a `NashMarianEncoder`."""

    config_class = NashMarianConfig

    def __init__(self, config):
        super().__init__(config)
        self.encoder = NashMarianEncoder(config)
        self.post_init()


class NashMarianMTModel(MarianMTModel):
    """MarianMTModel (OPUS-MT) whose encoder layers have their own widths."""

    config_class = NashMarianConfig

    def __init__(self, config):
        legacy = _legacy_checkpointing(config)
        super().__init__(config)
        self.model = NashMarianModel(config)
        self.post_init()
        _restore_checkpointing(self, legacy)


class NashM2M100Encoder(M2M100Encoder):
    """M2M100's encoder with per-layer widths (the forward is the stock one)."""

    def __init__(self, config):
        super().__init__(config)
        _narrow_layers(self, config, NashM2M100Attention)
        self.post_init()


class NashM2M100Model(M2M100Model):
    """M2M100Model with a `NashM2M100Encoder`."""

    config_class = NashM2M100Config

    def __init__(self, config):
        super().__init__(config)
        self.encoder = NashM2M100Encoder(config)
        self.post_init()


class NashM2M100ForConditionalGeneration(M2M100ForConditionalGeneration):
    """M2M100ForConditionalGeneration (M2M100, NLLB) whose encoder layers have their own widths."""

    config_class = NashM2M100Config

    def __init__(self, config):
        legacy = _legacy_checkpointing(config)
        super().__init__(config)
        self.model = NashM2M100Model(config)
        self.post_init()
        _restore_checkpointing(self, legacy)


class NashMBartEncoder(MBartEncoder):
    """mBART's encoder with per-layer widths (the forward is the stock one)."""

    def __init__(self, config):
        super().__init__(config)
        _narrow_layers(self, config, NashMBartAttention)
        self.post_init()


class NashMBartModel(MBartModel):
    """MBartModel with a `NashMBartEncoder`."""

    config_class = NashMBartConfig

    def __init__(self, config):
        super().__init__(config)
        self.encoder = NashMBartEncoder(config)
        self.post_init()


class NashMBartForConditionalGeneration(MBartForConditionalGeneration):
    """MBartForConditionalGeneration (mBART, mBART-50) whose encoder layers have their own widths."""

    config_class = NashMBartConfig

    def __init__(self, config):
        legacy = _legacy_checkpointing(config)
        super().__init__(config)
        self.model = NashMBartModel(config)
        self.post_init()
        _restore_checkpointing(self, legacy)


class NashPegasusEncoder(PegasusEncoder):
    """Pegasus's encoder with per-layer widths (the forward is the stock one)."""

    def __init__(self, config):
        super().__init__(config)
        _narrow_layers(self, config, NashPegasusAttention)
        self.post_init()


class NashPegasusModel(PegasusModel):
    """PegasusModel with a `NashPegasusEncoder`."""

    config_class = NashPegasusConfig

    def __init__(self, config):
        super().__init__(config)
        self.encoder = NashPegasusEncoder(config)
        self.post_init()


class NashPegasusForConditionalGeneration(PegasusForConditionalGeneration):
    """PegasusForConditionalGeneration whose encoder layers have their own widths."""

    config_class = NashPegasusConfig

    def __init__(self, config):
        legacy = _legacy_checkpointing(config)
        super().__init__(config)
        self.model = NashPegasusModel(config)
        self.post_init()
        _restore_checkpointing(self, legacy)


# save_pretrained copies this file beside the weights and writes `auto_map`, so every checkpoint
# saved from these classes (compact's output, and distill's after it) loads with trust_remote_code.
for _config, _model in (
    (NashBartConfig, NashBartForConditionalGeneration),
    (NashMarianConfig, NashMarianMTModel),
    (NashM2M100Config, NashM2M100ForConditionalGeneration),
    (NashMBartConfig, NashMBartForConditionalGeneration),
    (NashPegasusConfig, NashPegasusForConditionalGeneration),
):
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = [
    "NashBartConfig",
    "NashBartForConditionalGeneration",
    "NashM2M100Config",
    "NashM2M100ForConditionalGeneration",
    "NashMBartConfig",
    "NashMBartForConditionalGeneration",
    "NashMarianConfig",
    "NashMarianMTModel",
    "NashPegasusConfig",
    "NashPegasusForConditionalGeneration",
]
