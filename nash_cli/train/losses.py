"""The distillation objective's terms, as pure tensor functions.

    L = alpha_ce * CE + alpha_kd * T^2 * KL_T(teacher || student) + alpha_enc * MSE_enc + alpha_dec * MSE_dec

Every term is an average over non-padding positions only: target positions (labels != -100) for
CE, KL and decoder hidden states, source positions (attention_mask == 1) for encoder hidden
states. Each function sums its per-position losses and divides by `normalizer`, which defaults
to the number of valid positions in the given batch. The training loop passes the number of
valid positions in the whole optimiser step instead (over gradient-accumulation micro-batches
and data-parallel processes), so the gradient is the same however the step's batch is split.

Logits and hidden states are upcast to float32 before any reduction (mixed precision).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from nash_cli.data import IGNORE_INDEX


def _divide(total: torch.Tensor, count: torch.Tensor | int, normalizer: float | torch.Tensor | None) -> torch.Tensor:
    if normalizer is None:
        normalizer = count
    if isinstance(normalizer, torch.Tensor):
        return total / normalizer.clamp_min(1).to(total.dtype)
    return total / max(float(normalizer), 1.0)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, *, normalizer: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Token-level cross-entropy against `labels`, ignoring positions labelled -100.

    Args:
        logits: [batch, length, vocab] student logits.
        labels: [batch, length] target ids, -100 at padding.
        normalizer: Divides the summed loss; default: the number of non-padding positions.

    Returns:
        A scalar: summed negative log-likelihood over valid positions / normalizer.
    """
    mask = labels != IGNORE_INDEX
    total = F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
    return _divide(total, mask.sum(), normalizer)


def kl_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 2.0,
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T) per target position, averaged over valid positions.

    With p = softmax(teacher / T) and q = softmax(student / T), each position contributes
    sum_v p_v (log p_v - log q_v); the T^2 factor keeps gradient magnitudes comparable across
    temperatures (Hinton et al.). Gradients flow into the student logits only.

    Args:
        student_logits: [batch, length, vocab].
        teacher_logits: [batch, length, vocab], same vocabulary.
        mask: [batch, length] bool, True at target positions (labels != -100).
        temperature: T > 0.
        normalizer: Divides the summed loss; default: the number of valid positions.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}")
    mask = mask.bool()
    student = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    total = F.kl_div(student, teacher, reduction="sum", log_target=True) * temperature**2
    return _divide(total, mask.sum(), normalizer)


def hidden_mse(
    student_states: Mapping[int, torch.Tensor] | Sequence[torch.Tensor],
    teacher_states: Mapping[int, torch.Tensor] | Sequence[torch.Tensor],
    mask: torch.Tensor,
    layer_map: Sequence[int],
    *,
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between paired layer outputs, over valid positions, summed over pairs.

    Student layer i is paired with teacher layer `layer_map[i]`. Per pair and position the error is
    the mean over the hidden size of (student - teacher)^2; positions are averaged (or divided by
    `normalizer`) and pairs summed, as the seq2seq distillation reference does.

    Args:
        student_states: Student layer outputs, [batch, length, hidden], indexed by layer.
        teacher_states: Teacher layer outputs, indexed by layer.
        mask: [batch, length], nonzero at real tokens (the attention mask for encoder states,
            labels != -100 for decoder states).
        layer_map: Teacher layer for each student layer, in student layer order.
        normalizer: Divides each pair's summed error; default: the number of valid positions.
    """
    mask = mask.bool()
    total = torch.zeros((), device=mask.device)
    for student_layer, teacher_layer in enumerate(layer_map):
        student = student_states[student_layer][mask].float()
        teacher = teacher_states[teacher_layer][mask].float()
        if student.shape != teacher.shape:
            raise ValueError(
                f"student layer {student_layer} states {tuple(student.shape)} vs teacher layer "
                f"{teacher_layer} {tuple(teacher.shape)}"
            )
        total = total + (student - teacher).pow(2).mean(dim=-1).sum()
    return _divide(total, mask.sum(), normalizer)
