"""Generation helpers: settings from the generation config, fixed lengths, deep decoders, batching."""

from __future__ import annotations

import pytest
import torch

from nash_cli.errors import NashError
from nash_cli.generation import (
    compile_model,
    generate,
    generate_texts,
    generated_lengths,
    length_sorted_batches,
    needs_explicit_cache,
    resolve_settings,
)
from nash_cli.toy import tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from threads, and OpenMP threads stall on a busy shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_settings_default_to_the_generation_config():
    model = tiny_model("t5")
    assert model.generation_config.max_length is None
    assert resolve_settings(model).max_new_tokens == 20  # stock generate()'s default
    with pytest.warns(UserWarning):  # stock generate() warns about its own default, then applies it
        assert model.generate(torch.randint(4, 100, (1, 5)), min_new_tokens=30).shape[1] == 1 + 20
    model.generation_config.num_beams = 3
    model.generation_config.max_length = 12
    settings = resolve_settings(model)
    assert (settings.num_beams, settings.max_new_tokens, settings.min_new_tokens) == (3, 11, 0)
    model.generation_config.max_new_tokens = 7
    assert resolve_settings(model).max_new_tokens == 7
    explicit = resolve_settings(model, num_beams=2, max_new_tokens=5)
    assert (explicit.num_beams, explicit.max_new_tokens) == (2, 5)
    fixed = resolve_settings(model, fixed_length=9)
    assert (fixed.min_new_tokens, fixed.max_new_tokens) == (9, 9)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_beams": 0}, "--beams"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"fixed_length": 0}, "--fixed-length"),
        ({"fixed_length": 4, "max_new_tokens": 5}, "--fixed-length"),
    ],
)
def test_bad_settings_are_user_errors(kwargs, fragment):
    with pytest.raises(NashError, match=fragment):
        resolve_settings(tiny_model("t5"), **kwargs)


@pytest.mark.parametrize(
    "family, encoder_layers, decoder_layers",
    [("t5", 2, 2), ("t5-gated", 2, 1), ("bart", 2, 2), ("t5", 1, 3)],
)
def test_fixed_length_generates_exactly_n_tokens(family, encoder_layers, decoder_layers):
    model = tiny_model(family, encoder_layers=encoder_layers, decoder_layers=decoder_layers)
    inputs = torch.randint(4, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    settings = resolve_settings(model, num_beams=2, fixed_length=6)
    sequences = generate(model, inputs, torch.ones_like(inputs), settings)
    assert sequences.shape == (3, 7)  # decoder start + 6
    assert generated_lengths(sequences, model.generation_config.eos_token_id) == [6, 6, 6]


def test_a_decoder_deeper_than_the_encoder_gets_an_explicit_cache():
    deep = tiny_model("t5", encoder_layers=1, decoder_layers=3)
    assert needs_explicit_cache(deep)
    assert not needs_explicit_cache(tiny_model("t5", encoder_layers=3, decoder_layers=1))
    inputs = torch.randint(4, 128, (2, 5))
    with pytest.raises(IndexError):  # why the explicit cache exists: stock generate() fails
        deep.generate(inputs, num_beams=2, max_new_tokens=3)
    settings = resolve_settings(deep, num_beams=2, max_new_tokens=3)
    for _ in range(2):  # a fresh cache per call: the second call must work too
        assert generate(deep, inputs, None, settings).shape[0] == 2
    with pytest.raises(NashError, match="--compile"):
        resolve_settings(deep, compile=True)


def test_lengths_stop_at_the_first_end_of_sequence_not_at_padding():
    # Column 0 is the decoder start; a random model can emit the pad id (0) mid-sequence.
    sequences = torch.tensor([[0, 5, 0, 1, 0], [0, 5, 6, 7, 8], [0, 1, 0, 0, 0]])
    assert generated_lengths(sequences, 1) == [3, 4, 1]
    assert generated_lengths(sequences, [7, 1]) == [3, 3, 1]
    assert generated_lengths(sequences, None) == [4, 4, 4]


def test_length_sorted_batches_cover_every_index_longest_first():
    lengths = [3, 9, 1, 9, 4, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    assert sorted(i for batch in batches for i in batch) == list(range(7))
    assert [lengths[i] for i in batches[0]] == [9, 9, 7]
    assert all(len(batch) <= 3 for batch in batches)
    with pytest.raises(NashError, match="--batch"):
        length_sorted_batches(lengths, 0)


def test_generate_texts_keeps_the_input_order(tokenizer):
    model = tiny_model("bart", vocab_size=len(tokenizer))
    sources = ["the cat sat .", "one two three four five six seven eight nine ten .", "bob", "a dog and a cat ."]
    settings = resolve_settings(model, num_beams=2, max_new_tokens=5)
    seen = []
    batched = generate_texts(model, tokenizer, sources, settings, batch_size=3, on_batch=seen.append)
    assert seen == [3, 1]
    alone = [generate_texts(model, tokenizer, [source], settings, batch_size=1)[0] for source in sources]
    assert batched == alone
    assert any(batched)  # the toy BART does emit tokens, so the comparison is not between empties


def test_compiled_beam_search_over_a_static_cache_matches_eager():
    import torch._dynamo

    model = tiny_model("t5")
    inputs = torch.randint(4, 128, (2, 7), generator=torch.Generator().manual_seed(3))
    eager = generate(model, inputs, None, resolve_settings(model, num_beams=2, fixed_length=5))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # The "eager" backend traces the graphs without generating code: the wiring, in seconds.
    compile_model(model, backend="eager")
    settings = resolve_settings(model, num_beams=2, fixed_length=5, compile=True)
    try:
        for _ in range(2):
            assert torch.equal(generate(model, inputs, None, settings), eager)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    finally:
        torch._dynamo.reset()
