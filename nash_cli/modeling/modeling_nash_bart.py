# Copyright the nash authors. Apache-2.0.
"""BART with per-layer encoder widths: the model class of a compacted (pruned) BART checkpoint.

This file is self-contained: it needs only torch and transformers (no nash). `nash compact`
copies it into its output and names it in the config's `auto_map`, so

    AutoModelForSeq2SeqLM.from_pretrained(path, trust_remote_code=True)

loads the model anywhere. The config keeps the stock model type ("bart"), so
`AutoTokenizer.from_pretrained(path)` needs no code and asks nothing, and a stock load without
`trust_remote_code` builds a stock BART that refuses these weights (size mismatch) instead of
running wrong. nash itself imports the same file from its package and uses these classes for any
config with `encoder_heads`, so it loads such checkpoints without remote code.

What differs from stock BART (everything else is the stock code):

* `config.encoder_heads[l]` lists the original head indices that encoder layer l keeps (their
  count sets the layer's width; heads keep their original size d_model / encoder_attention_heads),
  and `config.encoder_ffn_dims[l]` its FFN width.
* A layer that keeps no heads skips self-attention and one that keeps no FFN units skips the
  FFN; each still adds its output projection's bias, as the masked model does. With
  `output_attentions` (eager attention) the headless layer's entry is an empty
  `(batch, 0, length, length)` tensor, so `encoder_attentions` keeps one entry per layer.
* The parameters of a skipped sublayer (its zero-width projections; not the output bias it
  still adds) take no part in the computation and are buffers, not parameters (the same
  names, still saved and loaded): DDP with `find_unused_parameters=False`, accelerate's and
  the HF Trainer's default, fails on parameters that never receive a gradient.
* A legacy `gradient_checkpointing: true` in the config turns checkpointing on for these
  encoder layers too, as stock BART does for its own.
"""

from __future__ import annotations

import warnings

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import BartConfig
from transformers.models.bart.modeling_bart import (
    BartAttention,
    BartEncoder,
    BartEncoderLayer,
    BartForConditionalGeneration,
    BartModel,
)


@strict
class NashBartConfig(BartConfig):
    """BartConfig plus the kept heads and FFN width of every encoder layer."""

    # The stock model type: AutoTokenizer (and every Auto class) first reads the config with
    # AutoConfig, which prompts "run the custom code? [y/N]" for a model type stock transformers
    # does not know. With "bart" it builds a stock BartConfig for the tokenizer without asking, while
    # `trust_remote_code=True` still selects this class through the config's `auto_map`.
    model_type = "bart"
    encoder_heads: list | None = None
    encoder_ffn_dims: list | None = None

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


class NashBartAttention(BartAttention):
    """Encoder self-attention with `num_heads` heads of the original size."""

    def __init__(self, config, num_heads: int, layer_idx=None):
        super().__init__(
            embed_dim=config.d_model,
            num_heads=config.encoder_attention_heads,
            dropout=config.attention_dropout,
            config=config,
            layer_idx=layer_idx,
        )
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
        weights = None
        if self.config._attn_implementation == "eager":
            batch, length = hidden_states.shape[:2]
            weights = hidden_states.new_zeros((batch, 0, length, length))
        return output, weights


class NashBartEncoderLayer(BartEncoderLayer):
    """Encoder layer with its own number of heads and FFN width."""

    def __init__(self, config, num_heads: int, ffn_dim: int, layer_idx=None):
        super().__init__(config, layer_idx=layer_idx)
        self.self_attn = NashBartAttention(config, num_heads, layer_idx=layer_idx)
        self.fc1 = _linear(self.embed_dim, ffn_dim, self.fc1)
        self.fc2 = _linear(ffn_dim, self.embed_dim, self.fc2)
        if ffn_dim == 0:
            _freeze((self.fc1, "weight"), (self.fc1, "bias"), (self.fc2, "weight"))

    def _constant(self, hidden_states, bias):
        # With every head (or unit) pruned the sublayer's output is its output bias alone.
        if bias is None:
            return hidden_states
        added = bias.to(hidden_states.dtype).expand_as(hidden_states)
        added = nn.functional.dropout(added, p=self.dropout, training=self.training)
        return hidden_states + added

    def forward(self, hidden_states, attention_mask, **kwargs):
        residual = hidden_states
        # Without heads the attention returns its output bias (see NashBartAttention.forward).
        hidden_states, _ = self.self_attn(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
        hidden_states = residual + hidden_states
        hidden_states = self.self_attn_layer_norm(hidden_states)

        residual = hidden_states
        if self.fc1.out_features == 0:
            hidden_states = self._constant(residual, self.fc2.bias)
        else:
            hidden_states = self.activation_fn(self.fc1(hidden_states))
            hidden_states = nn.functional.dropout(hidden_states, p=self.activation_dropout, training=self.training)
            hidden_states = self.fc2(hidden_states)
            hidden_states = nn.functional.dropout(hidden_states, p=self.dropout, training=self.training)
            hidden_states = residual + hidden_states
        hidden_states = self.final_layer_norm(hidden_states)

        if hidden_states.dtype == torch.float16 and not torch.isfinite(hidden_states).all():
            clamp_value = torch.finfo(hidden_states.dtype).max - 1000
            hidden_states = torch.clamp(hidden_states, min=-clamp_value, max=clamp_value)
        return hidden_states


class NashBartEncoder(BartEncoder):
    """The encoder with per-layer widths (the forward is stock BART's)."""

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList(
            [
                NashBartEncoderLayer(
                    config, len(config.encoder_layer_heads(i)), config.encoder_layer_ffn(i), layer_idx=i
                )
                for i in range(config.encoder_layers)
            ]
        )
        self.post_init()


class NashBartModel(BartModel):
    """BartModel with a `NashBartEncoder`."""

    config_class = NashBartConfig

    def __init__(self, config: NashBartConfig):
        super().__init__(config)
        self.encoder = NashBartEncoder(config)
        self.post_init()


class NashBartForConditionalGeneration(BartForConditionalGeneration):
    """BartForConditionalGeneration whose encoder layers have their own widths."""

    config_class = NashBartConfig

    def __init__(self, config: NashBartConfig):
        # The stock __init__ consumes a legacy `gradient_checkpointing: true` (and deletes it from the
        # config) before the model below replaces the stock one; it is applied again at the end.
        legacy_checkpointing = getattr(config, "gradient_checkpointing", False)
        super().__init__(config)
        self.model = NashBartModel(config)
        self.post_init()
        if legacy_checkpointing:
            config.gradient_checkpointing = True
            self._backward_compatibility_gradient_checkpointing()


# save_pretrained copies this file beside the weights and writes `auto_map`, so every checkpoint
# saved from these classes (compact's output, and distill's after it) loads with trust_remote_code.
NashBartConfig.register_for_auto_class()
NashBartForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")

__all__ = ["NashBartConfig", "NashBartForConditionalGeneration"]
