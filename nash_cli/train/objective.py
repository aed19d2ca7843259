"""The distillation objective: which loss terms are on, and the loss of one micro-batch.

With a teacher: `alpha_ce * CE + alpha_kd * T^2 KL + alpha_enc * MSE_enc + alpha_dec * MSE_dec`,
where the hidden-state terms compare student layer i's output with teacher layer `map[i]`'s,
taken with forward hooks on the layers themselves. Without a teacher: cross-entropy alone
(plain fine-tuning). The tensor maths is in `nash_cli.train.losses`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nash_cli.arch import decoder_input_ids
from nash_cli.data import IGNORE_INDEX
from nash_cli.train.config import TrainConfig
from nash_cli.train.losses import cross_entropy, hidden_mse, kl_divergence

#: The loss terms the loop logs, in a fixed order (reduced across processes as one vector).
TERMS = ("loss", "ce", "kl", "enc_mse", "dec_mse")


class Capture:
    """Forward hooks that keep the outputs of chosen layers of one model."""

    def __init__(self, model, wanted: dict[str, Sequence[int]]):
        from nash_cli.arch import family_of

        self.outputs: dict[str, dict[int, torch.Tensor]] = {stack: {} for stack in wanted}
        self.handles = []
        family = family_of(model)
        for stack, indices in wanted.items():
            layers = family.layers(model, stack)
            for index in sorted(set(indices)):
                self.handles.append(layers[index].register_forward_hook(self._hook(stack, index)))

    def _hook(self, stack: str, index: int):
        def keep(module, inputs, output):
            self.outputs[stack][index] = output[0] if isinstance(output, tuple) else output

        return keep

    def clear(self) -> None:
        for outputs in self.outputs.values():
            outputs.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.clear()


class Objective:
    """The loss of one run: its terms and weights, and the hooks that capture hidden states.

    Use: `attach(student, autocast)` once the models are on their device, then call the object
    on each micro-batch, and `detach()` at the end.

    Args:
        config: The run's weights (`alpha_*`) and temperature.
        teacher: The teacher, or None for plain fine-tuning (cross-entropy only).
        encoder_layer_map: Teacher encoder layer per student encoder layer; None (or
            `alpha_enc == 0`) turns the encoder hidden-state term off.
        decoder_layer_map: The same for the decoder.
    """

    def __init__(
        self,
        config: TrainConfig,
        teacher=None,
        encoder_layer_map: Sequence[int] | None = None,
        decoder_layer_map: Sequence[int] | None = None,
    ):
        self.config = config
        self.teacher = teacher
        if teacher is None:
            self.encoder_map = self.decoder_map = None
        else:
            self.encoder_map = list(encoder_layer_map) if encoder_layer_map and config.alpha_enc > 0 else None
            self.decoder_map = list(decoder_layer_map) if decoder_layer_map and config.alpha_dec > 0 else None
        self.student_capture: Capture | None = None
        self.teacher_capture: Capture | None = None
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    def settings(self) -> dict[str, Any]:
        """The objective as run (weights, temperature, layer maps), for the result and manifest."""
        c, distilling = self.config, self.teacher is not None
        return {
            "teacher": distilling,
            "alpha_ce": c.alpha_ce if distilling else 1.0,
            "alpha_kd": c.alpha_kd if distilling else 0.0,
            "temperature": c.temperature if distilling else None,
            "alpha_enc": c.alpha_enc if self.encoder_map else 0.0,
            "alpha_dec": c.alpha_dec if self.decoder_map else 0.0,
            "encoder_layer_map": self.encoder_map,
            "decoder_layer_map": self.decoder_map,
        }

    def term_on(self, name: str) -> bool:
        """Whether the term `name` (one of `TERMS`) is part of this objective."""
        if name == "kl":
            return self.teacher is not None
        if name == "enc_mse":
            return bool(self.encoder_map)
        if name == "dec_mse":
            return bool(self.decoder_map)
        return True

    def layer_map(self, stack: str) -> list[int]:
        """The teacher layer of each student layer of `stack` ("encoder" or "decoder")."""
        return self.encoder_map if stack == "encoder" else self.decoder_map

    def attach(self, student, autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
        """Installs the hidden-state hooks on `student` and the teacher; `autocast` is the mixed
        precision context the teacher's forward pass runs under."""
        if autocast is not None:
            self.autocast = autocast
        wanted = {}
        if self.encoder_map:
            wanted["encoder"] = range(len(self.encoder_map))
        if self.decoder_map:
            wanted["decoder"] = range(len(self.decoder_map))
        self.student_capture = Capture(student, wanted)
        teacher_wanted = {stack: [self.layer_map(stack)[i] for i in indices] for stack, indices in wanted.items()}
        self.teacher_capture = Capture(self.teacher, teacher_wanted) if self.teacher is not None else None

    def detach(self) -> None:
        """Removes the hooks."""
        for capture in (self.student_capture, self.teacher_capture):
            if capture is not None:
                capture.remove()

    def __call__(self, model, unwrapped, batch, *, n_target, n_source):
        """The weighted loss of one micro-batch and its terms (ce, kl, enc_mse, dec_mse), each a
        sum normalised by the global token counts given (`n_target` labels, `n_source` inputs).

        `model` is what runs the forward pass (possibly wrapped for data parallelism);
        `unwrapped` is the plain model, for its decoder inputs (`arch.decoder_input_ids`)."""
        c = self.config
        labels = batch["labels"]
        mask = labels != IGNORE_INDEX
        self.student_capture.clear()
        outputs = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids(unwrapped, labels),
            use_cache=False,
        )
        logits = outputs.logits
        ce = cross_entropy(logits, labels, normalizer=n_target)
        zero = torch.zeros((), device=logits.device)
        kl = enc = dec = zero
        if self.teacher is not None:
            self.teacher_capture.clear()
            # inference_mode keeps no activations; the losses index the teacher's outputs,
            # which makes ordinary tensors of the parts they need.
            with torch.inference_mode(), self.autocast():
                teacher_logits = self.teacher(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    decoder_input_ids=decoder_input_ids(self.teacher, labels),
                    use_cache=False,
                ).logits
            kl = kl_divergence(logits, teacher_logits, mask, temperature=c.temperature, normalizer=n_target)
            if self.encoder_map:
                enc = hidden_mse(
                    self.student_capture.outputs["encoder"],
                    self.teacher_capture.outputs["encoder"],
                    batch["attention_mask"],
                    self.encoder_map,
                    normalizer=n_source,
                )
            if self.decoder_map:
                dec = hidden_mse(
                    self.student_capture.outputs["decoder"],
                    self.teacher_capture.outputs["decoder"],
                    mask,
                    self.decoder_map,
                    normalizer=n_target,
                )
            loss = c.alpha_ce * ce + c.alpha_kd * kl + c.alpha_enc * enc + c.alpha_dec * dec
        else:
            loss = ce
        return loss, (ce, kl, enc, dec)


__all__ = ["TERMS", "Capture", "Objective"]
