"""A CTranslate2 model specification built from a loaded nash model.

The model is read through `nash_cli.arch.Anatomy` (tensors, norms and flags, no module names),
so one builder serves T5 v1.0, T5 v1.1 / FLAN-T5 and BART, dense or compact. The layout it fills
is CTranslate2's public `TransformerSpec` (`ctranslate2.specs`).

Where the stock converter of CTranslate2 4.8.5 goes wrong with transformers 5, this builder
decides from the model itself:

- the decoder output scale (d_model^-0.5) comes from `scale_decoder_outputs` through the
  anatomy, not from `tie_word_embeddings` (which transformers 5 reports as True for every T5);
- the lm_head is always the model's own output projection (T5 v1.1 / FLAN keep distinct values);
- BART is post-norm (`pre_norm=False`) without reading the `normalize_before` attribute that
  `BartConfig` no longer has.

Per-layer widths: CTranslate2 takes each layer's FFN width from its weights, so a compact FFN
needs nothing (a layer that kept no unit gets one zero unit, since a width of 0 does not load).
Heads are one count per stack: every encoder layer gets `max(kept heads)` heads, its kept
heads first and zero heads after. A zero head contributes exactly zero (its value rows and
output columns are zero), so the output is unchanged, but its attention is still computed. For
T5, each layer gets its own slice of the relative position bias table (the kept heads' columns),
so the shared-bias trap of pruned T5 does not arise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch

    from nash_cli.arch import AttentionParts, NormParts

#: transformers activation name -> CTranslate2 `common_spec.Activation` member.
ACTIVATIONS = {
    "relu": "RELU",
    "gelu": "GELU",
    "gelu_python": "GELU",
    "gelu_new": "GELUTanh",
    "gelu_fast": "GELUTanh",
    "gelu_pytorch_tanh": "GELUTanh",
    "quick_gelu": "GELUSigmoid",
    "silu": "SWISH",
    "swish": "SWISH",
}


@dataclass
class Padding:
    """What the engine's encoder computes beyond the model's own heads and FFN units."""

    heads_per_layer: list[int]
    """Heads each encoder layer kept."""
    engine_heads: int
    """Heads every encoder layer has in the engine (the most any layer kept, at least 1)."""
    full_heads: int
    """Heads per layer of the unpruned encoder."""
    zero_heads: int
    """Zero heads added, over all encoder layers."""
    zero_head_parameters: int
    """Parameters of those zero heads (q, k, v rows and o columns, biases included)."""
    attention_work: float
    """Encoder attention computed / attention the kept heads need (1.0: no padding)."""
    ffn_units_per_layer: list[int]
    """FFN units each encoder layer kept."""
    zero_ffn_units: int
    """Zero FFN units added (one per layer that kept none)."""
    ffn_alignment: int = 64
    """The largest power of two, up to `FFN_ALIGNMENT`, that divides every encoder layer's FFN
    width (`prune-encoder --ffn-multiple-of 64` makes it 64)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """One sentence for the user: what the padding costs, and whether the FFN widths are aligned."""
        ffn = (
            f"FFN widths are multiples of {FFN_ALIGNMENT}"
            if self.ffn_alignment >= FFN_ALIGNMENT
            else f"FFN widths are not all multiples of {FFN_ALIGNMENT}, which CPU engines run slower per unit "
            f"(prune-encoder --ffn-multiple-of {FFN_ALIGNMENT} aligns them)"
        )
        if not self.zero_heads:
            return f"no padding: every encoder layer keeps {self.engine_heads} heads; {ffn}"
        kept = sum(self.heads_per_layer)
        return (
            f"CTranslate2 has one head count per stack: {self.zero_heads} zero heads pad the encoder to "
            f"{self.engine_heads} heads per layer ({kept} kept); the output is exact, but their attention is "
            f"computed: {100 * (self.attention_work - 1):.0f}% more encoder attention work, "
            f"{self.zero_head_parameters:,} zero parameters (prune-encoder --uniform-heads avoids it); {ffn}"
        )


#: FFN widths that are multiples of this run at full speed per unit on CPU engines.
FFN_ALIGNMENT = 64


def ffn_alignment(widths: list[int]) -> int:
    """The largest power of two, at most `FFN_ALIGNMENT`, dividing every width (0 divides by any)."""
    alignment = FFN_ALIGNMENT
    while alignment > 1 and any(width % alignment for width in widths):
        alignment //= 2
    return alignment


def activation_of(name: str):
    """The CTranslate2 activation for a transformers activation name; NashError if none."""
    from ctranslate2.specs import common_spec

    if name not in ACTIVATIONS:
        raise NashError(
            f"the FFN activation {name!r} has no CTranslate2 equivalent; export supports {', '.join(sorted(ACTIVATIONS))}"
        )
    return getattr(common_spec.Activation, ACTIVATIONS[name])


def _plain(tensor: "torch.Tensor") -> "torch.Tensor":
    return tensor.detach().to("cpu").contiguous()


def _padded_rows(tensor: "torch.Tensor", rows: int) -> "torch.Tensor":
    import torch

    tensor = _plain(tensor)
    if tensor.shape[0] == rows:
        return tensor
    padded = torch.zeros((rows, *tensor.shape[1:]), dtype=tensor.dtype)
    padded[: tensor.shape[0]] = tensor
    return padded


def _padded_columns(tensor: "torch.Tensor", columns: int) -> "torch.Tensor":
    import torch

    tensor = _plain(tensor)
    if tensor.shape[1] == columns:
        return tensor
    padded = torch.zeros((tensor.shape[0], columns), dtype=tensor.dtype)
    padded[:, : tensor.shape[1]] = tensor
    return padded


def _bias(linear, rows: int) -> "torch.Tensor":
    import torch

    if linear.bias is None:
        return torch.zeros(rows, dtype=linear.weight.dtype)
    return _padded_rows(linear.bias, rows)


def _set_linear(spec, weight: "torch.Tensor", bias: "torch.Tensor | None") -> None:
    spec.weight = _plain(weight)
    if bias is not None:
        spec.bias = _plain(bias)


def _set_norm(spec, norm: "NormParts") -> None:
    spec.gamma = _plain(norm.weight)
    if norm.bias is not None:
        spec.beta = _plain(norm.bias)


def _set_attention(spec, parts: "AttentionParts", *, self_attention: bool, inner: int, query_scale: float) -> None:
    """Fills one attention spec, padding q/k/v rows and o columns with zeros up to `inner`."""
    import torch

    has_bias = parts.q.bias is not None or parts.o.bias is not None
    q, k, v = (_padded_rows(linear.weight, inner) for linear in (parts.q, parts.k, parts.v))
    biases = [_bias(linear, inner) for linear in (parts.q, parts.k, parts.v)] if has_bias else None
    if self_attention:
        _set_linear(spec.linear[0], torch.cat([q, k, v]), torch.cat(biases) if biases else None)
    else:
        _set_linear(spec.linear[0], q, biases[0] if biases else None)
        _set_linear(spec.linear[1], torch.cat([k, v]), torch.cat(biases[1:]) if biases else None)
    _set_linear(spec.linear[-1], _padded_columns(parts.o.weight, inner), parts.o.bias)
    spec.queries_scale = float(query_scale)


def _set_ffn(spec, block, gated: bool) -> int:
    """Fills one FFN spec; returns the zero units added (1 when the layer kept none, else 0)."""
    ffn = block.ffn
    width = ffn.output.in_features
    units = max(width, 1)
    inputs = [(_padded_rows(linear.weight, units), _bias(linear, units) if linear.bias is not None else None) for linear in ffn.inputs]
    _set_linear(spec.linear_0, *inputs[0])
    if gated:
        _set_linear(spec.linear_0_noact, *inputs[1])
    _set_linear(spec.linear_1, _padded_columns(ffn.output.weight, units), ffn.output.bias)
    _set_norm(spec.layer_norm, block.ffn_norm)
    return units - width


def _set_stack(spec, stack, anatomy, *, decoder: bool, heads: int) -> tuple[int, int]:
    """Fills the embeddings, norms and layers of one stack; returns (zero heads, zero FFN units)."""
    import numpy as np
    import torch

    embeddings = spec.embeddings if decoder else spec.embeddings[0]
    embeddings.weight = _plain(stack.embed_tokens)
    spec.scale_embeddings = stack.embed_scale if stack.embed_scale != 1.0 else False
    if stack.positions is not None:
        spec.position_encodings.encodings = _plain(stack.positions)
    if stack.embedding_norm is not None:
        _set_norm(spec.layernorm_embedding, stack.embedding_norm)
    if stack.final_norm is not None:
        _set_norm(spec.layer_norm, stack.final_norm)
    inner = heads * anatomy.head_dim
    zero_heads = zero_units = 0
    for layer_spec, block in zip(spec.layer, stack.blocks):
        kept = len(block.heads)
        zero_heads += heads - kept
        _set_attention(layer_spec.self_attention, block.self_attention, self_attention=True, inner=inner,
                       query_scale=anatomy.query_scale)
        _set_norm(layer_spec.self_attention.layer_norm, block.self_attention_norm)
        if stack.relative_bias is not None:
            # Each layer reads the columns of the heads it kept; zero heads get zero bias (any
            # value would do: their values are zero). CTranslate2 aliases identical tables.
            table = _plain(stack.relative_bias)
            columns = table[:, list(block.heads)]
            if kept != heads:
                columns = torch.cat([columns, torch.zeros(table.shape[0], heads - kept, dtype=table.dtype)], dim=1)
            layer_spec.self_attention.relative_attention_bias = columns.contiguous()
            layer_spec.self_attention.relative_attention_max_distance = np.dtype("int32").type(stack.relative_max_distance)
        if decoder:
            _set_attention(layer_spec.attention, block.cross_attention, self_attention=False, inner=inner,
                           query_scale=anatomy.query_scale)
            _set_norm(layer_spec.attention.layer_norm, block.cross_attention_norm)
        zero_units += _set_ffn(layer_spec.ffn, block, anatomy.gated)
    return zero_heads, zero_units


def vocabulary(tokenizer, size: int) -> list[str]:
    """One distinct token string per id below `size`, as CTranslate2's vocabulary file holds.

    Ids the tokenizer has are its tokens; ids beyond it (T5's embedding is padded to a multiple
    of 128) and any duplicate get placeholders `<nash_unused_N>`. nash feeds CTranslate2 ids
    mapped through this list, so only distinctness matters.
    """
    known = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(min(known, size))))
    seen: set[str] = set()
    result = []
    for index in range(size):
        token = tokens[index] if index < len(tokens) else None
        if token is None or token in seen:
            token = f"<nash_unused_{index}>"
        seen.add(token)
        result.append(token)
    return result


def build_spec(model, tokens: list[str], special: dict[str, int | None]):
    """The CTranslate2 `TransformerSpec` of `model`, and the padding it needed.

    Args:
        model: A loaded nash / transformers seq2seq model (float weights, any device).
        tokens: The vocabulary, one token per embedding row (see `vocabulary`).
        special: Token ids: `decoder_start`, `eos`, `bos`, `unk`, `pad` (None when absent).

    Returns:
        `(spec, Padding)`; the spec is not yet validated or quantized.

    Raises:
        NashError: an activation CTranslate2 does not have.
    """
    from ctranslate2.specs import transformer_spec

    from nash_cli.arch import family_of

    anatomy = family_of(model).anatomy(model)
    activation = activation_of(anatomy.activation)
    kept = [len(block.heads) for block in anatomy.encoder.blocks]
    engine_heads = max([1, *kept])
    common = {
        "pre_norm": anatomy.pre_norm,
        "activation": activation,
        "layernorm_embedding": anatomy.encoder.embedding_norm is not None,
        "relative_attention_bias": anatomy.encoder.relative_bias is not None,
        "ffn_glu": anatomy.gated,
        "rms_norm": anatomy.rms_norm,
        "head_dim": anatomy.head_dim,
    }
    encoder = transformer_spec.TransformerEncoderSpec(len(anatomy.encoder.blocks), engine_heads, **common)
    decoder = transformer_spec.TransformerDecoderSpec(len(anatomy.decoder.blocks), anatomy.decoder.num_heads, **common)
    spec = transformer_spec.TransformerSpec(encoder, decoder)
    zero_heads, zero_units = _set_stack(spec.encoder, anatomy.encoder, anatomy, decoder=False, heads=engine_heads)
    _set_stack(spec.decoder, anatomy.decoder, anatomy, decoder=True, heads=anatomy.decoder.num_heads)
    _set_linear(spec.decoder.projection, anatomy.lm_head, anatomy.logits_bias)
    if anatomy.output_scale is not None:
        spec.decoder.scale_outputs = float(anatomy.output_scale)

    norms = [anatomy.encoder.blocks[0].ffn_norm.eps] if anatomy.encoder.blocks else [1e-6]
    spec.config.layer_norm_epsilon = float(norms[0])
    fallback = special.get("pad") if special.get("pad") is not None else 0

    def token(key: str) -> str:
        index = special.get(key)
        return tokens[index if index is not None and 0 <= index < len(tokens) else fallback]

    spec.config.decoder_start_token = token("decoder_start")
    spec.config.eos_token = token("eos")
    spec.config.bos_token = token("bos") if special.get("bos") is not None else token("pad")
    spec.config.unk_token = token("unk") if special.get("unk") is not None else token("pad")
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)

    per_head = 4 * anatomy.d_model * anatomy.head_dim + (3 * anatomy.head_dim if any(
        block.self_attention.q.bias is not None for block in anatomy.encoder.blocks) else 0)
    padding = Padding(
        heads_per_layer=kept,
        engine_heads=engine_heads,
        full_heads=anatomy.encoder.num_heads,
        zero_heads=zero_heads,
        zero_head_parameters=zero_heads * per_head,
        attention_work=(engine_heads * len(kept) / sum(kept)) if sum(kept) else float(engine_heads * len(kept)),
        ffn_units_per_layer=[block.ffn.output.in_features for block in anatomy.encoder.blocks],
        zero_ffn_units=zero_units,
        ffn_alignment=ffn_alignment([block.ffn.output.in_features for block in anatomy.encoder.blocks]),
    )
    return spec, padding
