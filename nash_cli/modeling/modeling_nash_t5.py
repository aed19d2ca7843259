# Copyright the nash authors. Apache-2.0.
"""T5 with per-layer encoder widths: the model class of a compacted (pruned) T5 checkpoint.

This file is self-contained: it needs only torch and transformers (no nash). `nash compact`
copies it into its output and names it in the config's `auto_map`, so

    AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)

loads the model anywhere. The config keeps the stock model type ("t5"), so
`AutoTokenizer.from_pretrained(path)` needs no code and asks nothing, and a stock load without
`trust_remote_code` builds a stock T5 that refuses these weights (size mismatch) instead of
running wrong. nash itself imports the same file from its package and uses these classes for any
config with `encoder_heads`, so it loads such checkpoints without remote code.

What differs from stock T5 (everything else is the stock code):

* `config.encoder_heads[l]` lists the original head indices that encoder layer l keeps, and
  `config.encoder_ffn_dims[l]` its FFN width. `num_heads` and `d_ff` stay the decoder's widths.
* The relative position bias is still computed once, in encoder layer 0, for all the original
  heads; every layer then slices it to the heads it kept. (Stock T5 shares one bias tensor
  across layers, which is only right while every layer has the same heads.)
* A layer that keeps no heads skips self-attention (it still computes the shared bias if it is
  layer 0); a layer that keeps no FFN units skips the FFN. With `output_attentions` (eager
  attention) the headless layer's entry is an empty `(batch, 0, length, length)` tensor, so
  `encoder_attentions` keeps one entry per layer.
* DDP with `find_unused_parameters=False` (accelerate's and the HF Trainer's default) fails on
  parameters that never receive a gradient, so a skipped sublayer leaves none: its zero-width
  projections are buffers, not parameters (the same names, still saved and loaded), and its
  layer norm (with layer 0's position bias table, which no layer reads when none keeps a head)
  joins the training graph with weight 0, so it receives a zero gradient and stays as it is.
* A legacy `gradient_checkpointing: true` in the config turns checkpointing on for these
  encoder layers too, as stock T5 does for its own.
"""

from __future__ import annotations

import copy
import warnings

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import T5Config
from transformers.models.t5.modeling_t5 import (
    T5Attention,
    T5Block,
    T5ForConditionalGeneration,
    T5LayerFF,
    T5LayerSelfAttention,
    T5Stack,
)


@strict
class NashT5Config(T5Config):
    """T5Config plus the kept heads and FFN width of every encoder layer."""

    # The stock model type: AutoTokenizer (and every Auto class) first reads the config with
    # AutoConfig, which prompts "run the custom code? [y/N]" for a model type stock transformers
    # does not know. With "t5" it builds a stock T5Config for the tokenizer without asking, while
    # `trust_remote_code=True` still selects this class through the config's `auto_map`.
    model_type = "t5"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None

    def encoder_layer_heads(self, index: int) -> list[int]:
        """Original head indices kept by encoder layer `index` (all heads when unset)."""
        if self.encoder_heads is None:
            return list(range(self.num_heads))
        return [int(h) for h in self.encoder_heads[index]]

    def encoder_layer_ffn(self, index: int) -> int:
        """FFN width of encoder layer `index` (`d_ff` when unset)."""
        if self.encoder_ffn_dims is None:
            return self.d_ff
        return int(self.encoder_ffn_dims[index])


def _freeze(*modules: nn.Module) -> None:
    """Turns the (zero-width) parameters of projections that compute nothing into buffers of the
    same names. Not `requires_grad_(False)`: `from_pretrained` makes every loaded tensor trainable."""
    for module in modules:
        for owner in module.modules():
            for name, parameter in list(owner.named_parameters(recurse=False)):
                del owner._parameters[name]
                owner.register_buffer(name, parameter.data)


def _with_idle(hidden_states: torch.Tensor, module: nn.Module, *idle: nn.Module) -> torch.Tensor:
    """`hidden_states` plus 0 times the parameters of `idle` modules: the same values, and a zero
    gradient for parameters the skipped sublayer does not use (only while training)."""
    if not (module.training and torch.is_grad_enabled()):
        return hidden_states
    # times 0 before summing: a finite weight gives exactly 0, never inf * 0
    zero = sum((p * 0).sum() for m in idle for p in m.parameters() if p.requires_grad)
    return hidden_states + zero.to(hidden_states.dtype) if torch.is_tensor(zero) else hidden_states


def _empty_attention(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor | None:
    """The attention weights of a layer without heads: `(batch, 0, length, length)` where the
    attention implementation returns weights (eager), else None as the other layers return."""
    if module.config._attn_implementation != "eager":
        return None
    batch, length = hidden_states.shape[:2]
    return hidden_states.new_zeros((batch, 0, length, length))


def _linear(n_in: int, n_out: int, like: nn.Linear) -> nn.Linear:
    with warnings.catch_warnings():
        # A fully pruned layer has zero-width projections; torch warns that initialising them is a no-op.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(n_in, n_out, bias=like.bias is not None, device=like.weight.device, dtype=like.weight.dtype)


class NashT5Attention(T5Attention):
    """Encoder self-attention over a subset of the original heads."""

    def __init__(self, config, kept_heads: list[int], has_relative_attention_bias: bool = False, layer_idx=None):
        super().__init__(config, has_relative_attention_bias=has_relative_attention_bias, layer_idx=layer_idx)
        full_heads = self.n_heads
        self.n_heads = len(kept_heads)
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.q = _linear(self.d_model, self.inner_dim, self.q)
        self.k = _linear(self.d_model, self.inner_dim, self.k)
        self.v = _linear(self.d_model, self.inner_dim, self.v)
        self.o = _linear(self.inner_dim, self.d_model, self.o)
        # The bias table (layer 0 only) keeps a column for every original head.
        self.full_heads = full_heads
        self.kept_heads = [int(h) for h in kept_heads]
        self.slice_bias = self.kept_heads != list(range(full_heads))
        # A plain attribute, not a buffer: it is config, not state, and must survive meta-device loading.
        self._kept_index: torch.Tensor | None = None

    def kept_index(self, device) -> torch.Tensor:
        """The kept head indices as a tensor on `device` (built once per device)."""
        if self._kept_index is None or self._kept_index.device != device:
            self._kept_index = torch.tensor(self.kept_heads, dtype=torch.long, device=device)
        return self._kept_index

    def full_bias(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The relative position bias for every original head: `(1, H, length, length)`."""
        length = hidden_states.shape[1]
        return self.compute_bias(length, length, device=hidden_states.device)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, cache=None, **kwargs):
        if position_bias is None:
            position_bias = self.full_bias(hidden_states)
        own_bias = position_bias
        if self.slice_bias:
            own_bias = position_bias.index_select(1, self.kept_index(position_bias.device))
        output, _, weights = super().forward(
            hidden_states, mask=mask, key_value_states=key_value_states, position_bias=own_bias, cache=cache, **kwargs
        )
        # Pass the full-head bias on: the next layer slices its own heads from it.
        return output, position_bias, weights


class NashT5LayerSelfAttention(T5LayerSelfAttention):
    """Self-attention sublayer that disappears when it keeps no heads."""

    def __init__(self, config, kept_heads: list[int], has_relative_attention_bias: bool = False, layer_idx=None):
        super().__init__(config, has_relative_attention_bias=has_relative_attention_bias, layer_idx=layer_idx)
        self.SelfAttention = NashT5Attention(config, kept_heads, has_relative_attention_bias, layer_idx)
        if not kept_heads:
            _freeze(self.SelfAttention.q, self.SelfAttention.k, self.SelfAttention.v, self.SelfAttention.o)

    def forward(self, hidden_states, attention_mask=None, position_bias=None, cache=None, **kwargs):
        if self.SelfAttention.n_heads == 0:
            if position_bias is None:
                position_bias = self.SelfAttention.full_bias(hidden_states)
            # The layer norm, and layer 0's bias table, which no layer reads when none keeps a head.
            idle = [self.layer_norm]
            if self.SelfAttention.has_relative_attention_bias:
                idle.append(self.SelfAttention.relative_attention_bias)
            hidden_states = _with_idle(hidden_states, self, *idle)
            return hidden_states, position_bias, _empty_attention(self.SelfAttention, hidden_states)
        return super().forward(
            hidden_states, attention_mask=attention_mask, position_bias=position_bias, cache=cache, **kwargs
        )


class NashT5LayerFF(T5LayerFF):
    """Feed-forward sublayer of a given width; it disappears at width 0."""

    def __init__(self, config, d_ff: int):
        super().__init__(config)
        dense = self.DenseReluDense
        for name in ("wi", "wi_0", "wi_1"):
            if hasattr(dense, name):
                setattr(dense, name, _linear(config.d_model, d_ff, getattr(dense, name)))
        dense.wo = _linear(d_ff, config.d_model, dense.wo)
        self.d_ff = d_ff
        if d_ff == 0:
            _freeze(self.DenseReluDense)

    def forward(self, hidden_states):
        if self.d_ff == 0:
            return _with_idle(hidden_states, self, self.layer_norm)
        return super().forward(hidden_states)


class NashT5Block(T5Block):
    """Encoder block with its own head subset and FFN width."""

    def __init__(self, config, kept_heads: list[int], d_ff: int, has_relative_attention_bias=False, layer_idx=None):
        super().__init__(config, has_relative_attention_bias=has_relative_attention_bias, layer_idx=layer_idx)
        self.layer[0] = NashT5LayerSelfAttention(config, kept_heads, has_relative_attention_bias, layer_idx)
        self.layer[-1] = NashT5LayerFF(config, d_ff)


class NashT5Stack(T5Stack):
    """The encoder stack with per-layer widths (the forward is stock T5's)."""

    def __init__(self, config):
        super().__init__(config)
        self.block = nn.ModuleList(
            [
                NashT5Block(
                    config,
                    config.encoder_layer_heads(i),
                    config.encoder_layer_ffn(i),
                    has_relative_attention_bias=i == 0,
                    layer_idx=i,
                )
                for i in range(config.num_layers)
            ]
        )
        self.post_init()


class NashT5ForConditionalGeneration(T5ForConditionalGeneration):
    """T5ForConditionalGeneration whose encoder layers have their own widths."""

    config_class = NashT5Config

    def __init__(self, config: NashT5Config):
        # The stock __init__ consumes a legacy `gradient_checkpointing: true` (and deletes it from the
        # config) before the encoder below replaces the stock one; it is applied again at the end.
        legacy_checkpointing = getattr(config, "gradient_checkpointing", False)
        super().__init__(config)
        encoder_config = copy.deepcopy(config)
        encoder_config.is_decoder = False
        encoder_config.use_cache = False
        self.encoder = NashT5Stack(encoder_config)
        self.post_init()
        if legacy_checkpointing:
            config.gradient_checkpointing = True
            self._backward_compatibility_gradient_checkpointing()


# save_pretrained copies this file beside the weights and writes `auto_map`, so every checkpoint
# saved from these classes (compact's output, and distill's after it) loads with trust_remote_code.
NashT5Config.register_for_auto_class()
NashT5ForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = ["NashT5Config", "NashT5ForConditionalGeneration"]
