"""The compact model classes (`nash_cli.modeling`): layers left with no heads or no FFN units."""

from __future__ import annotations

import pytest
import torch

from nash_cli import modeling
from nash_cli.toy import tiny_config

#: Layer 0 keeps no heads, layer 1 no FFN units (the hard cases of a pruned encoder).
HEADS = [[], [0, 1, 2, 3]]
FFN = [20, 0]


def compact_model(family: str, *, heads=HEADS, ffn=FFN, vocab_size: int = 64, **config):
    """A compact model of `family` ("t5" or "bart") built from a config, as `compact` writes it."""
    base = tiny_config(family, vocab_size=vocab_size, encoder_layers=len(heads)).to_dict()
    base.pop("model_type", None)
    base.update(encoder_heads=heads, encoder_ffn_dims=ffn, **config)
    config_class, model_class = modeling.classes(family)
    torch.manual_seed(0)
    return model_class(config_class(**base))


def _ids(vocab_size: int = 64):
    return torch.randint(4, vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_attentions_line_up_with_the_layers(family):
    model = compact_model(family, attn_implementation="eager").eval()
    ids = _ids()
    with torch.no_grad():
        out = model(input_ids=ids, decoder_input_ids=ids, output_attentions=True)
    attentions = out.encoder_attentions
    assert len(attentions) == 2  # one entry per encoder layer, the headless one included
    assert tuple(attentions[0].shape) == (2, 0, 7, 7)
    assert tuple(attentions[1].shape) == (2, 4, 7, 7)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_a_legacy_gradient_checkpointing_config_is_honoured(family):
    model = compact_model(family, gradient_checkpointing=True)
    encoder = model.get_encoder()
    layers = encoder.block if family == "t5" else encoder.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    model.train()
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()  # checkpointed layers with empty sublayers train
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    stock = compact_model(family, heads=[[0, 1, 2, 3]] * 2, ffn=[64, 64])
    assert not any(layer.gradient_checkpointing for layer in (stock.get_encoder().block if family == "t5" else stock.get_encoder().layers))


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_every_trainable_parameter_gets_a_gradient(family, tmp_path):
    """DDP with find_unused_parameters=False (accelerate's and HF Trainer's default) needs it."""
    model = compact_model(family)
    with torch.no_grad():  # a value the init would not give, to see it saved and loaded back
        for tensor in model.state_dict().values():
            tensor.add_(0.5)
    model.save_pretrained(tmp_path)
    _, model_class = modeling.classes(family)
    loaded = model_class.from_pretrained(tmp_path)
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)  # the idle parts are still saved, under their names
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    # the parameter count is the masked model's less what the masks remove: a layer norm stays a parameter
    if family == "t5":
        assert "encoder.block.0.layer.0.layer_norm.weight" in dict(loaded.named_parameters())
    for candidate in (model, loaded):
        candidate.train()
        ids = _ids()
        candidate(input_ids=ids, labels=ids).loss.backward()
        unused = [n for n, p in candidate.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == []


def test_t5_without_any_head_freezes_the_position_bias():
    model = compact_model("t5", heads=[[], []], ffn=[20, 20]).train()
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
