"""Each loss term against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from nash_cli.train.losses import cross_entropy, hidden_mse, kl_divergence


def test_cross_entropy_ignores_padding():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0], [100.0, -100.0]]])
    labels = torch.tensor([[0, 0, -100]])
    # position 0: -log(1/2); position 1: -log(3/4); position 2 is padding (it would cost 200).
    expected = (math.log(2) + math.log(4 / 3)) / 2
    assert cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # A normaliser replaces the count of valid positions (used across micro-batches / processes).
    assert cross_entropy(logits, labels, normalizer=4).item() == pytest.approx(expected * 2 / 4, rel=1e-6)


def test_kl_applies_temperature_and_skips_padding():
    student = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [5.0, -5.0]]])
    teacher = torch.tensor([[[2 * math.log(3.0), 0.0], [1.0, 2.0], [-5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    # At T = 2 the teacher's first row is softmax([ln 3, 0]) = [3/4, 1/4] and the student's is
    # [1/2, 1/2]; the second rows agree (KL 0); the third is padding.
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 4 * kl / 2  # T^2 = 4, averaged over the two target positions
    assert kl_divergence(student, teacher, mask, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)
    # At T = 1 the teacher's first row is softmax([2 ln 3, 0]) = [9/10, 1/10].
    kl1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert kl_divergence(student, teacher, mask, temperature=1.0).item() == pytest.approx(kl1 / 2, rel=1e-6)


def test_kl_gradient_reaches_student_only():
    student = torch.zeros(1, 2, 3, requires_grad=True)
    teacher = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    with torch.inference_mode():  # the teacher's outputs come from inference mode in training
        teacher = teacher * 1.0
    loss = kl_divergence(student, teacher.clone(), torch.tensor([[True, False]]))
    loss.backward()
    assert student.grad[0, 0].abs().sum() > 0
    assert student.grad[0, 1].abs().sum() == 0  # padding position gets no gradient


def test_hidden_mse_pairs_layers_and_masks_padding():
    # Two student layers, three teacher layers; student 0 -> teacher 0, student 1 -> teacher 2.
    student = [torch.tensor([[[1.0, 1.0], [2.0, 2.0], [9.0, 9.0]]]), torch.tensor([[[0.0, 0.0], [0.0, 4.0], [9.0, 9.0]]])]
    teacher = [
        torch.tensor([[[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]]]),
        torch.full((1, 3, 2), 100.0),  # not in the map
        torch.tensor([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]),
    ]
    mask = torch.tensor([[1, 1, 0]])
    # pair (0, 0): position 0 -> mean(0, 4) = 2, position 1 -> 0; pair (1, 2): position 0 -> mean(1, 1) = 1,
    # position 1 -> mean(0, 16) = 8. Sum over pairs of the mean over the 2 valid positions: 1 + 4.5.
    assert hidden_mse(student, teacher, mask, [0, 2]).item() == pytest.approx(5.5)
    # Dicts holding only the captured layers work the same way.
    assert hidden_mse(dict(enumerate(student)), {0: teacher[0], 2: teacher[2]}, mask, [0, 2]).item() == pytest.approx(5.5)


def test_losses_with_no_valid_position_are_zero():
    logits = torch.randn(1, 2, 4)
    labels = torch.full((1, 2), -100)
    assert cross_entropy(logits, labels).item() == 0
    assert kl_divergence(logits, logits.flip(-1), labels != -100).item() == 0
