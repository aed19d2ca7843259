"""Layer selection: the index rules and the state-dict surgery."""

from __future__ import annotations

import pytest
import torch

from nash_cli.errors import NashError
from nash_cli.arch import count_parameters, family_of
from nash_cli.surgery.layers import (
    check_indices,
    parse_indices,
    select_layers,
    strategy_indices,
    uniform_indices,
)
from nash_cli.toy import tiny_model

# The official rule floor(d * (L - 1) / (k - 1)), written out by hand for L = 12.
UNIFORM_12 = {
    1: [0],
    2: [0, 11],
    3: [0, 5, 11],
    4: [0, 3, 7, 11],
    5: [0, 2, 5, 8, 11],
    6: [0, 2, 4, 6, 8, 11],
    7: [0, 1, 3, 5, 7, 9, 11],
    8: [0, 1, 3, 4, 6, 7, 9, 11],
    9: [0, 1, 2, 4, 5, 6, 8, 9, 11],
    10: [0, 1, 2, 3, 4, 6, 7, 8, 9, 11],
    11: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11],
    12: list(range(12)),
}


@pytest.mark.parametrize("k", range(1, 13))
def test_uniform_indices_for_twelve_layers(k):
    assert uniform_indices(12, k) == UNIFORM_12[k]


@pytest.mark.parametrize(
    ("num_layers", "k", "expected"),
    [
        (6, 1, [0]),
        (6, 2, [0, 5]),
        (6, 3, [0, 2, 5]),
        (6, 4, [0, 1, 3, 5]),
        (6, 6, [0, 1, 2, 3, 4, 5]),
        (8, 3, [0, 3, 7]),
        (8, 4, [0, 2, 4, 7]),
        (24, 3, [0, 11, 23]),
        (24, 4, [0, 7, 15, 23]),
        (24, 6, [0, 4, 9, 13, 18, 23]),
    ],
)
def test_uniform_indices_other_depths(num_layers, k, expected):
    assert uniform_indices(num_layers, k) == expected


@pytest.mark.parametrize("num_layers", [6, 8, 12, 24])
def test_uniform_indices_are_distinct_sorted_and_span_the_stack(num_layers):
    for k in range(2, num_layers + 1):
        indices = uniform_indices(num_layers, k)
        assert indices == sorted(set(indices)) and len(indices) == k
        assert indices[0] == 0 and indices[-1] == num_layers - 1


def test_low_and_high():
    assert strategy_indices("low", 12, 3) == [0, 1, 2]
    assert strategy_indices("high", 12, 3) == [9, 10, 11]


@pytest.mark.parametrize("k", [0, -1, 13])
def test_impossible_counts(k):
    with pytest.raises(NashError):
        strategy_indices("uniform", 12, k)


def test_explicit_indices():
    assert check_indices(parse_indices("11,0,5"), 12) == [0, 5, 11]
    with pytest.raises(NashError, match="twice"):
        check_indices([0, 5, 5], 12)
    with pytest.raises(NashError, match="does not exist"):
        check_indices([0, 12], 12)
    with pytest.raises(NashError, match="does not exist"):
        check_indices([-1, 3], 12)
    with pytest.raises(NashError, match="integers"):
        parse_indices("0,a")


def _layer_state(model, prefix, index):
    return {k[len(f"{prefix}.{index}.") :]: v for k, v in model.state_dict().items() if k.startswith(f"{prefix}.{index}.")}


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
@pytest.mark.parametrize("strategy", ["uniform", "high"])
def test_kept_layers_equal_the_teachers(family, strategy):
    teacher = tiny_model(family, encoder_layers=4, decoder_layers=6)
    kept = strategy_indices(strategy, 6, 3)
    student = select_layers(teacher, decoder=kept)
    prefix = "model.decoder.layers" if family == "bart" else "decoder.block"
    for new, old in enumerate(kept):
        got, want = _layer_state(student, prefix, new), _layer_state(teacher, prefix, old)
        if family != "bart":
            # the position bias table lives in the first layer of the stack, whichever it is
            want.pop("layer.0.SelfAttention.relative_attention_bias.weight", None)
            got_bias = got.pop("layer.0.SelfAttention.relative_attention_bias.weight", None)
            if new == 0:
                assert torch.equal(got_bias, teacher.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight)
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    # everything outside the decoder's layers is untouched
    for key, value in teacher.state_dict().items():
        if not key.startswith(prefix):
            assert torch.equal(student.state_dict()[key], value), key
    if family == "t5-gated":
        assert not torch.equal(student.lm_head.weight, student.shared.weight)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_layer_idx_renumbered_and_generate_runs(family):
    teacher = tiny_model(family, encoder_layers=4, decoder_layers=6)
    student = select_layers(teacher, decoder=[1, 3, 5])
    layers = student.model.decoder.layers if family == "bart" else student.decoder.block
    for i, layer in enumerate(layers):
        attention = layer.self_attn if family == "bart" else layer.layer[0].SelfAttention
        assert attention.layer_idx == i
    inputs = torch.randint(4, 100, (2, 9))
    out = student.generate(inputs, num_beams=4, max_new_tokens=6, min_new_tokens=6)
    assert out.shape[0] == 2


def test_t5_high_keeps_the_position_bias():
    teacher = tiny_model("t5", encoder_layers=4, decoder_layers=6)
    student = select_layers(teacher, decoder=[3, 4, 5])
    first = student.decoder.block[0].layer[0].SelfAttention
    assert first.has_relative_attention_bias
    assert torch.equal(
        first.relative_attention_bias.weight, teacher.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    )
    # the student's decoder must behave like the teacher's layers 3-5 fed with the teacher's bias
    inputs = torch.randint(4, 100, (1, 7))
    labels = torch.randint(4, 100, (1, 5))
    with torch.no_grad():
        t_out = teacher(input_ids=inputs, labels=labels, output_hidden_states=True)
        s_out = student(input_ids=inputs, labels=labels, output_hidden_states=True)
    assert torch.allclose(t_out.encoder_last_hidden_state, s_out.encoder_last_hidden_state)
    assert torch.isfinite(s_out.logits).all()


def test_encoder_selection_and_deeper_decoder_generate():
    from transformers import DynamicCache, EncoderDecoderCache

    teacher = tiny_model("t5", encoder_layers=4, decoder_layers=4)
    student = select_layers(teacher, decoder=[0, 1, 2, 3], encoder=[0, 3])
    assert student.config.num_layers == 2 and student.config.num_decoder_layers == 4
    assert student.encoder.block[0].layer[0].SelfAttention.has_relative_attention_bias
    inputs = torch.randint(4, 100, (2, 9))
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    out = student.generate(inputs, num_beams=4, max_new_tokens=5, cache=cache)
    assert out.shape[0] == 2


def test_parameter_counts():
    teacher = tiny_model("t5-gated", encoder_layers=2, decoder_layers=4)
    student = select_layers(teacher, decoder=[0, 3])
    before, after = count_parameters(teacher), count_parameters(student)
    # the decoder's count is its layers and final norm, without the relative-position table (an embedding)
    norm = teacher.decoder.final_layer_norm.weight.numel()
    assert (after["decoder"] - norm) * 2 == before["decoder"] - norm
    assert before["total"] == sum(p.numel() for p in teacher.parameters())
    assert before["total"] - after["total"] == before["decoder"] - after["decoder"]


def _compact_encoder(family):
    """A compact model whose three encoder layers keep different heads (same count) and widths."""
    from nash_cli.masking import encoder_shape

    dense = tiny_model(family, vocab_size=96, d_model=32, num_heads=4, d_ff=64, encoder_layers=3, decoder_layers=2)
    shape = encoder_shape(dense)
    heads = torch.ones(shape.num_layers, shape.num_heads)
    heads[0, 3] = heads[1, 0] = heads[2, 1] = 0  # three heads per layer, a different one lost in each
    ffn = torch.ones(shape.num_layers, shape.d_ff)
    ffn[0, :20] = 0
    ffn[1, 40:] = 0
    ffn[2, ::2] = 0
    return dense, heads, ffn


@pytest.mark.parametrize("family", ["t5", "t5-gated", "bart"])
@pytest.mark.parametrize("kept", [[1, 2], [2], [0, 2]])
def test_encoder_selection_on_a_compact_model_reindexes_its_per_layer_widths(family, kept):
    from nash_cli.surgery.compact import compact_model

    dense, heads, ffn = _compact_encoder(family)
    compact, custom = compact_model(dense, heads, ffn)
    assert custom
    student = select_layers(compact, decoder=[0, 1], encoder=kept)
    # the same model built by hand: keep the dense layers first, then compact with their masks
    by_hand, _ = compact_model(select_layers(dense, decoder=[0, 1], encoder=kept), heads[kept], ffn[kept])
    assert student.config.encoder_heads == by_hand.config.encoder_heads
    assert student.config.encoder_ffn_dims == by_hand.config.encoder_ffn_dims == [int(ffn[i].sum()) for i in kept]
    assert len(student.config.encoder_heads) == len(kept)
    ids = torch.randint(4, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    decoder = torch.randint(4, 96, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = student(input_ids=ids, decoder_input_ids=decoder).logits
        want = by_hand(input_ids=ids, decoder_input_ids=decoder).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    # what an exporter reads: each kept layer's original heads
    blocks = family_of(student).anatomy(student).encoder.blocks
    assert [list(block.heads) for block in blocks] == [[h for h in range(4) if heads[i, h]] for i in kept]


def test_per_layer_lists_that_do_not_match_the_depth_are_refused():
    from nash_cli.surgery.compact import compact_model
    from nash_cli.surgery.layers import keep_layers

    dense, heads, ffn = _compact_encoder("t5")
    compact, _ = compact_model(dense, heads, ffn)
    config = compact.config
    config.encoder_ffn_dims = config.encoder_ffn_dims[:2]  # a hand-edited config: 2 widths, 3 layers
    with pytest.raises(NashError, match="encoder_ffn_dims has 2 entries for 3 encoder layers"):
        keep_layers(family_of(compact), config, compact.state_dict(), "encoder", [0, 2])
    # the decoder's selection does not read the encoder's lists
    new_config, _ = keep_layers(family_of(compact), config, compact.state_dict(), "decoder", [1])
    assert new_config.encoder_ffn_dims == config.encoder_ffn_dims
