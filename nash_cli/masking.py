"""Applying head and FFN-unit masks to a model, and the masks file of a `masked` checkpoint.

Masks act where `docs/method.md` says: a head mask scales that head's slice of the attention
output just before the output projection; an FFN mask scales the intermediate activation just
before the FFN output projection. Both are forward pre-hooks on those projections, so the
model's own code and weights are untouched and the hooks can be removed at any time.

One forward pre-hook on the encoder draws the masks once per encoder pass (fresh HardConcrete
samples in training mode, the deterministic masks in eval mode), so every layer of one pass,
and any recomputation under gradient checkpointing, sees the same sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nash_cli.arch import family_of
from nash_cli.errors import NashError
from nash_cli.l0 import EncoderShape, L0Masks, Lagrangian

#: File name of the masks inside a `masked` checkpoint.
MASKS_FILE = "masks.safetensors"
#: Format tag written into the masks file's metadata.
MASKS_FORMAT = "nash-l0-masks"

MaskSource = Callable[[bool], tuple[torch.Tensor, torch.Tensor]]


def encoder_shape(model) -> EncoderShape:
    """The prunable shape of `model`'s encoder; NashError if its layers have different widths."""
    family = family_of(model)
    layers = family.layers(model, "encoder")
    shapes = set()
    for layer in layers:
        attention = family.self_attention(layer)
        ffn = family.ffn(layer)
        shapes.add((attention.num_heads, attention.head_dim, ffn.output.in_features))
    if len(shapes) != 1:
        raise NashError(
            "the encoder's layers have different widths (already pruned); prune-encoder needs a dense student "
            "such as the output of select-layers"
        )
    (num_heads, head_dim, d_ff), = shapes
    return EncoderShape(
        num_layers=len(layers),
        num_heads=num_heads,
        head_dim=head_dim,
        d_ff=d_ff,
        d_model=model.config.d_model,
        gated=len(family.ffn(layers[0]).inputs) == 2,
        bias=family.has_bias,
    )


class MaskHooks:
    """Hooks that apply head and FFN masks to a model's encoder; `remove()` detaches them.

    Attributes:
        current: The `(heads, ffn)` masks of the latest encoder pass, shapes `(L, H)` and `(L, F)`.
    """

    def __init__(self, model: nn.Module, source: MaskSource) -> None:
        family = family_of(model)
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None
        self._source = source
        self._handles = [model.get_encoder().register_forward_pre_hook(self._draw)]
        for index, layer in enumerate(family.layers(model, "encoder")):
            attention = family.self_attention(layer)
            self._handles.append(attention.o.register_forward_pre_hook(self._head_hook(index, attention.head_dim)))
            self._handles.append(family.ffn(layer).output.register_forward_pre_hook(self._ffn_hook(index)))

    def _draw(self, module, args):
        self.current = self._source(module.training)

    def _head_hook(self, index: int, head_dim: int):
        def hook(module, args):
            heads = self.current[0][index]
            x = args[0]
            scale = heads.to(device=x.device, dtype=x.dtype).repeat_interleave(head_dim)
            return (x * scale,) + tuple(args[1:])

        return hook

    def _ffn_hook(self, index: int):
        def hook(module, args):
            x = args[0]
            return (x * self.current[1][index].to(device=x.device, dtype=x.dtype),) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        """Detaches every hook; the model is then the plain unmasked model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def attach_l0(model: nn.Module, masks: L0Masks) -> MaskHooks:
    """Masks `model` with `masks`: HardConcrete samples in training mode, deterministic masks in eval."""

    def source(training: bool):
        return masks.sample() if training else masks.deterministic()

    return MaskHooks(model, source)


def attach_fixed(model: nn.Module, heads: torch.Tensor, ffn: torch.Tensor) -> MaskHooks:
    """Masks `model` with fixed `(L, H)` head and `(L, F)` FFN masks, in any mode."""
    heads, ffn = heads.detach().float(), ffn.detach().float()
    return MaskHooks(model, lambda training: (heads, ffn))


# --- the masks file -----------------------------------------------------------------------------


@dataclass
class MaskFile:
    """The contents of `masks.safetensors`."""

    heads_log_alpha: torch.Tensor
    """`(L, H)` log_alphas of the encoder heads."""
    ffn_log_alpha: torch.Tensor
    """`(L, F)` log_alphas of the encoder FFN units."""
    heads_mask: torch.Tensor
    """`(L, H)` final head masks (1 kept, 0 pruned): what compact removes."""
    ffn_mask: torch.Tensor
    """`(L, F)` final FFN-unit masks."""
    lambda1: float
    """Final Lagrange multiplier lambda1 (informational)."""
    lambda2: float
    """Final Lagrange multiplier lambda2 (informational)."""


def save_masks(
    path: Path,
    masks: L0Masks,
    lagrangian: Lagrangian | None = None,
    *,
    final: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Writes log_alphas, the binary masks and the lambdas to `path` (a safetensors file).

    Args:
        final: The binary `(heads, ffn)` masks to store, i.e. what compact will remove
            (prune-encoder passes the target-meeting masks of `l0.masks_for_target`); without
            it, the deterministic masks of `masks`' log_alphas.
    """
    heads, ffn = final if final is not None else masks.deterministic()
    return write_mask_file(
        path,
        heads_log_alpha=masks.heads_log_alpha,
        ffn_log_alpha=masks.ffn_log_alpha,
        heads_mask=heads,
        ffn_mask=ffn,
        lambdas=None if lagrangian is None else (lagrangian.lambda1, lagrangian.lambda2),
    )


def write_mask_file(
    path: Path,
    *,
    heads_log_alpha: torch.Tensor,
    ffn_log_alpha: torch.Tensor,
    heads_mask: torch.Tensor,
    ffn_mask: torch.Tensor,
    lambdas: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Path:
    """Writes a masks file from explicit tensors (`save_masks` derives the masks from log_alphas)."""
    from safetensors.torch import save_file

    def plain(tensor):
        return torch.as_tensor(tensor).detach().float().cpu().clone().contiguous()

    tensors = {
        "heads.log_alpha": plain(heads_log_alpha),
        "ffn.log_alpha": plain(ffn_log_alpha),
        "heads.mask": plain(heads_mask),
        "ffn.mask": plain(ffn_mask),
    }
    if lambdas is not None:
        tensors["lagrangian.lambda1"] = plain(lambdas[0]).reshape(1)
        tensors["lagrangian.lambda2"] = plain(lambdas[1]).reshape(1)
    save_file(tensors, str(path), metadata={"format": MASKS_FORMAT, "version": "1"})
    return Path(path)


def load_masks(checkpoint: Path, shape: EncoderShape | None = None) -> MaskFile:
    """Reads `checkpoint/masks.safetensors`; NashError if it is missing, unreadable or does not fit.

    Args:
        checkpoint: A `masked` checkpoint directory.
        shape: The model's encoder shape; when given, the masks' shapes must match it.
    """
    from safetensors import safe_open

    path = Path(checkpoint) / MASKS_FILE
    if not path.is_file():
        raise NashError(f"{path} is missing; compact needs the masked checkpoint written by prune-encoder")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises several types for truncated or garbage files
        raise NashError(f"{path} is not a readable safetensors file ({type(error).__name__}); re-run prune-encoder") from None
    if metadata.get("format") != MASKS_FORMAT:
        raise NashError(f"{path} is not a nash masks file (format {metadata.get('format')!r}); re-run prune-encoder")
    needed = ("heads.log_alpha", "ffn.log_alpha", "heads.mask", "ffn.mask")
    missing = [key for key in needed if key not in tensors]
    if missing:
        raise NashError(f"{path} lacks {', '.join(missing)}; re-run prune-encoder")
    heads, ffn = tensors["heads.mask"].float(), tensors["ffn.mask"].float()
    for name, mask in (("heads.mask", heads), ("ffn.mask", ffn)):
        if mask.dim() != 2 or not bool(((mask == 0) | (mask == 1)).all()):
            raise NashError(f"{path}: {name} must be a 2-D tensor of 0s and 1s; re-run prune-encoder")
    if tensors["heads.log_alpha"].shape != heads.shape or tensors["ffn.log_alpha"].shape != ffn.shape:
        raise NashError(f"{path}: masks and log_alphas have different shapes; re-run prune-encoder")
    if shape is not None:
        want_heads = (shape.num_layers, shape.num_heads)
        want_ffn = (shape.num_layers, shape.d_ff)
        if tuple(heads.shape) != want_heads or tuple(ffn.shape) != want_ffn:
            raise NashError(
                f"{path} has masks for {tuple(heads.shape)} heads and {tuple(ffn.shape)} FFN units but the model "
                f"has {want_heads} and {want_ffn}; use the masks written with this checkpoint"
            )
    return MaskFile(
        heads_log_alpha=tensors["heads.log_alpha"].float(),
        ffn_log_alpha=tensors["ffn.log_alpha"].float(),
        heads_mask=heads,
        ffn_mask=ffn,
        lambda1=float(tensors.get("lagrangian.lambda1", torch.zeros(1))[0]),
        lambda2=float(tensors.get("lagrangian.lambda2", torch.zeros(1))[0]),
    )


# --- parameter counts ---------------------------------------------------------------------------


def pruned_params(shape: EncoderShape, heads: torch.Tensor, ffn: torch.Tensor) -> int:
    """Encoder parameters that binary masks remove."""
    dropped_heads = int(heads.numel() - heads.sum())
    dropped_units = int(ffn.numel() - ffn.sum())
    return dropped_heads * shape.params_per_head + dropped_units * shape.params_per_unit


def whole_model_sparsity(student_non_embedding: int, pruned: int, teacher_non_embedding: int) -> float:
    """The paper's figure: 1 - (student's remaining non-embedding params) / (teacher's non-embedding params).

    Deleted decoder layers count as pruned because the student's count lacks them.
    """
    return 1.0 - (student_non_embedding - pruned) / teacher_non_embedding


def apply_checkpoint_masks(model: nn.Module, source: str | Path) -> MaskHooks | None:
    """Masks a model loaded from a `masked` checkpoint with its final (stored) masks.

    `artifact.load_model` returns a masked checkpoint's plain trained weights; evaluating or
    benchmarking it as the pruned model needs its masks applied. Returns the hooks, or None
    when `source` is not a masked checkpoint (nothing to apply).
    """
    from nash_cli.artifact import read_manifest

    if (read_manifest(source) or {}).get("state") != "masked":
        return None
    masks = load_masks(Path(source), encoder_shape(model))
    return attach_fixed(model, masks.heads_mask, masks.ffn_mask)
