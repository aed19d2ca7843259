"""`prune-encoder`: the L0 extension of the training engine, and the command end to end."""

from __future__ import annotations

import math

import pytest
import torch

from nash_cli.errors import NashError
from nash_cli.l0 import LOG_ALPHA_MAX, LOG_ALPHA_MIN
from nash_cli.masking import encoder_shape, load_masks, non_embedding_params
from nash_cli.prune_encoder import L0Extension, PruneSettings, check_settings
from nash_cli.toy import tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models gain nothing from intra-op threads and lose a lot to them on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)



def test_settings_are_checked():
    check_settings(PruneSettings())
    for bad in (
        PruneSettings(target_sparsity=0.0),
        PruneSettings(target_sparsity=1.0),
        PruneSettings(sparsity_warmup=-1),
        PruneSettings(reg_lr=0),
        PruneSettings(droprate_init=1.0),
    ):
        with pytest.raises(NashError):
            check_settings(bad)


def test_extension_contract(tmp_path):
    model = tiny_model("bart")
    extension = L0Extension(model, PruneSettings(target_sparsity=0.4, sparsity_warmup=0.5, reg_lr=0.02), teacher_non_embedding=10**6)
    extension.prepare(model, torch.device("cpu"))
    groups = extension.param_groups()
    assert [g["lr"] for g in groups] == [0.02, -0.02]
    assert all(g["weight_decay"] == 0.0 for g in groups)
    assert {id(p) for p in groups[0]["params"]} == {id(extension.masks.heads_log_alpha), id(extension.masks.ffn_log_alpha)}
    # no mask parameter is part of the model (they must not end up in model.safetensors)
    assert not {id(p) for g in groups for p in g["params"]} & {id(p) for p in model.parameters()}

    # the target rises over the warm-up (a fraction of the run's steps), then holds
    assert extension.loss(0, 100)[1]["target_sparsity"] == 0.0
    assert extension.loss(25, 100)[1]["target_sparsity"] == pytest.approx(0.2)
    term, values = extension.loss(80, 100)
    assert values["target_sparsity"] == pytest.approx(0.4) and extension.warmup_steps == 50
    assert set(values) >= {"expected_sparsity", "target_sparsity", "lambda_1", "lambda_2", "lagrangian"}
    assert float(term.detach()) == 0.0  # lambdas start at zero

    # clamp after each step
    with torch.no_grad():
        extension.masks.heads_log_alpha.fill_(-30)
        extension.masks.ffn_log_alpha.fill_(30)
    extension.after_optimizer_step(1)
    assert float(extension.masks.heads_log_alpha.detach().max()) == pytest.approx(LOG_ALPHA_MIN)
    assert float(extension.masks.ffn_log_alpha.detach().min()) == pytest.approx(LOG_ALPHA_MAX)

    # resumable state
    state = extension.state_dict()
    other = L0Extension(model, PruneSettings(seed=5))
    other.load_state_dict(state)
    assert torch.equal(other.masks.heads_log_alpha, extension.masks.heads_log_alpha)

    # output file and manifest
    extension.extra_files()["masks.safetensors"](tmp_path)
    masks = load_masks(tmp_path, encoder_shape(model))
    assert masks.heads_mask.sum() == 0 and masks.ffn_mask.sum() == masks.ffn_mask.numel()
    results = extension.manifest_extra()["prune_encoder"]
    assert results["heads_per_layer"] == [0, 0] and results["ffn_units_per_layer"] == [64, 64]
    assert results["target_sparsity"] == 0.4
    removed = results["pruned_params"]
    assert removed == 2 * 4 * encoder_shape(model).params_per_head
    assert results["whole_model_sparsity"] == pytest.approx(1 - (non_embedding_params(model) - removed) / 10**6)


def test_lagrangian_drives_sparsity_to_the_target():
    """The extension alone, in a minimal loop: log_alpha descends, the lambdas ascend."""
    torch.manual_seed(0)
    model = tiny_model("t5", d_model=32, num_heads=8, d_kv=4, d_ff=256)
    extension = L0Extension(model, PruneSettings(target_sparsity=0.3, sparsity_warmup=50, reg_lr=0.1))
    extension.prepare(model, torch.device("cpu"))
    optimizer = torch.optim.AdamW(extension.param_groups())
    model.train()
    steps = 300
    for step in range(steps):
        ids = torch.randint(4, 128, (4, 10))
        out = model(input_ids=ids, labels=ids[:, :5].contiguous())
        term, _ = extension.loss(step, steps)
        optimizer.zero_grad()
        (out.loss + term).backward()
        optimizer.step()
        extension.after_optimizer_step(step + 1)
    results = extension.results()
    assert abs(results["expected_sparsity"] - 0.3) < 0.01, results
    assert abs(results["deterministic_sparsity"] - 0.3) < 0.01, results
    assert results["lambda_2"] > 0
