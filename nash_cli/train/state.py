"""Resumable training state, written atomically beside the output.

While a run trains towards `<output>`, everything it needs to continue lives in the staging
directory `<output>.partial/`:

    <output>.partial/
        run.json            what must match for --resume (data fingerprint, global batch, ...)
        train_log.jsonl     every logged step and evaluation so far
        latest              the name of the newest complete state, e.g. "step-00000120"
        step-00000120/      model.safetensors, optimizer.pt, scheduler.pt, progress.json,
                            rng-<rank>.pt per process, extension.pt (if any), scaler.pt (fp16)
        best-00000100/      model.safetensors (+ extension.pt): the best weights by eval loss

A state directory is written under a temporary name, flushed, renamed, and only then does
`latest` (itself replaced with an atomic rename) point at it; a run killed at any moment leaves
`latest` naming a complete state. Tensors are written with safetensors (weights) or
`torch.save` of plain tensors and numbers, read back with `weights_only=True`: resuming never
unpickles arbitrary objects.

`StateStore` writes and reads those directories for the training loop; the functions below it
are the file-level pieces (atomic writes, the `latest` pointer, pruning, the log).
"""

from __future__ import annotations

import json
import os
import re
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nash_cli.artifact import fsync_dir, write_files_atomic

if TYPE_CHECKING:
    from nash_cli.train.extension import TrainingExtension

LATEST = "latest"
RUN = "run.json"
LOG = "train_log.jsonl"
PROGRESS = "progress.json"
_STATE_DIR = re.compile(r"^(step|best)-(\d{8})$")


#: Fingerprint keys naming the models a run trains from (`model_identity`); `--resume` refuses
#: other weights, whose training would be recorded as descending from models it did not start from.
MODEL_KEYS = ("student", "teacher")

#: Fingerprint keys an earlier nash version did not record: a `run.json` without them resumes.
LATER_KEYS = (*MODEL_KEYS, "eval_data")


def model_identity(source: str | Path | None) -> str | None:
    """What identifies a model a run starts from: `sha256:<hash of its weight files>` for a local
    checkpoint, `hub:<id>` for a hub id, None for no model (no teacher)."""
    from nash_cli.artifact import is_local, weights_sha256

    if source is None:
        return None
    if not is_local(source):
        return f"hub:{source}"
    return f"sha256:{weights_sha256(source)}"


def describe_identity(identity: str | None) -> str:
    """A model identity as a message shows it (a hash cut to 12 digits)."""
    if identity is None:
        return "none"
    if identity.startswith("sha256:"):
        return identity[: len("sha256:") + 12]
    return identity


def partial_dir(output: str | Path) -> Path:
    """The staging directory of a run writing `output`: `<output>.partial` beside it."""
    output = Path(output).absolute()
    return output.with_name(output.name + ".partial")


def state_name(step: int) -> str:
    """Directory name of the resumable state after `step` optimiser steps."""
    return f"step-{step:08d}"


def best_name(step: int) -> str:
    """Directory name of the best weights, found at `step`."""
    return f"best-{step:08d}"


def fsync_tree(path: Path) -> None:
    """Flushes every file under `path`, then the directory itself."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(path)


def write_text_atomic(path: Path, text: str) -> None:
    """Replaces `path` with `text`, flushed to disk (nash's one atomic writer, durable)."""
    write_files_atomic({path: text}, durable=True)


def commit_dir(temporary: Path, final: Path) -> None:
    """Flushes `temporary` and renames it to `final` (replacing a stale `final`).

    Unlike `artifact.staged_output`, the temporary directory has a fixed name that every process
    of a distributed run knows (each writes its own random state into it).
    """
    fsync_tree(temporary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    fsync_dir(final.parent)


def latest_state(partial: Path) -> Path | None:
    """The newest complete state directory, or None when there is none."""
    pointer = partial / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    state = partial / name
    if not _STATE_DIR.match(name) or not (state / PROGRESS).is_file():
        return None
    return state


def read_progress(state: Path) -> dict[str, Any]:
    """The progress record of a state directory (step, epoch, best eval, last losses, ...)."""
    return json.loads((state / PROGRESS).read_text())


def check_state(state: Path, *, fsdp: bool = False, extension: bool = False) -> dict[str, Any]:
    """Checks that a state directory holds, whole, every file `StateStore.load` reads.

    A state is renamed into place only once complete, so a damaged one means a disk that filled,
    a copy cut short or a hand edit; resuming from it would fail half-way through loading. This
    reads no tensors: headers and zip directories only.

    Args:
        state: The state directory (`latest_state`'s answer).
        fsdp: Whether the run saves through accelerate's sharded state (no model or optimizer file).
        extension: Whether the run has an extension, whose state must be there too.

    Returns:
        The state's progress record.

    Raises:
        NashError: naming the damaged or missing file and how to start over.
    """
    import zipfile

    from nash_cli.errors import NashError

    def damaged(path: Path, problem: str) -> NashError:
        return NashError(
            f"cannot resume: {path} {problem}; start over with --force instead of --resume, or remove {state.parent}"
        )

    try:
        progress = read_progress(state)
    except ValueError:
        raise damaged(state / PROGRESS, "is cut short or not valid JSON") from None
    if not isinstance(progress, dict) or not isinstance(progress.get("step"), int):
        raise damaged(state / PROGRESS, "has no step number")
    required = ["scheduler.pt"]
    required += ["accelerate"] if fsdp else ["model.safetensors", "optimizer.pt"]
    required += ["extension.pt"] if extension else []
    for name in required:
        if not (state / name).exists():
            raise damaged(state / name, "is missing")
    for path in sorted(state.glob("*.pt")):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut-short one lacks its directory
            raise damaged(path, "is cut short (not a complete torch file)")
    weights = [] if fsdp else [state / "model.safetensors"]
    best = progress.get("best")
    if isinstance(best, dict) and isinstance(best.get("step"), int):
        # the best weights so far: restored at the end of the run when --keep best selects them
        weights.append(state.parent / best_name(best["step"]) / "model.safetensors")
    for path in weights:
        _check_safetensors(path, damaged)
    return progress


def _check_safetensors(path: Path, damaged) -> None:
    from nash_cli.artifact import safetensors_problem

    if not path.is_file():
        raise damaged(path, "is missing")
    problem = safetensors_problem(path)
    if problem is not None:
        raise damaged(path, f"is not a readable safetensors file ({problem})")


def prune_states(partial: Path, keep: set[str]) -> None:
    """Removes state, best and temporary directories other than those named in `keep`."""
    for entry in partial.iterdir():
        if entry.name in keep or not entry.is_dir():
            continue
        if _STATE_DIR.match(entry.name) or entry.name.startswith(".tmp-"):
            shutil.rmtree(entry, ignore_errors=True)


def append_log(log: Path, record: dict[str, Any]) -> None:
    """Adds one JSON line to the run's log."""
    with open(log, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_log(log: Path, step: int) -> None:
    """Drops log lines written after `step` (by a run that was then interrupted)."""
    if not log.is_file():
        return
    kept = []
    for line in log.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except ValueError:  # a line cut short by the kill
            continue
    write_text_atomic(log, "".join(line + "\n" for line in kept))


def save_tensors(obj: Any, path: Path) -> None:
    """`torch.save` for plain containers of tensors and numbers (read with `load_tensors`)."""
    import torch

    torch.save(obj, path)


def load_tensors(path: Path, map_location: Any = "cpu") -> Any:
    """Reads what `save_tensors` wrote, refusing anything but tensors and plain values."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def rng_state() -> dict[str, Any]:
    """This process's random state: torch (CPU and, if present, CUDA) and Python's."""
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def dedupe(weights: dict[str, Any]) -> dict[str, Any]:
    """Drops second names of one storage (a tied lm_head), which safetensors refuses."""
    seen, kept = set(), {}
    for name, tensor in weights.items():
        key = (tensor.data_ptr(), tuple(tensor.shape)) if tensor.device.type != "meta" else name
        if key in seen:
            continue
        seen.add(key)
        kept[name] = tensor
    return kept


class StateStore:
    """The resumable states and best weights of one run, in its staging directory.

    Every process calls every method (they synchronise through the accelerator); the main process
    writes the shared files, each process its own random state. Under FSDP the model and optimiser
    go through accelerate's sharded `save_state` / `load_state`.

    Args:
        partial: The staging directory, `<output>.partial/` (`prepare` makes it).
        accelerator: The run's accelerate.Accelerator.
        fsdp: Whether the model is FSDP-sharded.
        extension: The run's extension, whose state is saved with every state and best weights.
    """

    def __init__(self, partial: Path, accelerator, *, fsdp: bool = False, extension: TrainingExtension | None = None):
        self.partial = Path(partial)
        self.accelerator = accelerator
        self.fsdp = fsdp
        self.extension = extension
        # {"step", "eval_loss"} of the best evaluation so far (its weights are in best-<step>/).
        self.best: dict[str, Any] | None = None
        self._resumable_best: dict[str, Any] | None = None

    def prepare(
        self, fingerprint: dict[str, Any], run_info: dict[str, Any], *, resume: bool, force: bool
    ) -> tuple[Path | None, list[str]]:
        """Readies the staging directory for a run; returns the state to resume from (None: a
        fresh start, for which the directory is emptied and `run.json` written) and notes.

        Raises:
            NashError: `resume` without a saved state or with a different `fingerprint` (data,
                eval data, batch, steps, seed, the student's and teacher's weights); an
                interrupted run's directory without `resume` or `force`.
        """
        from nash_cli.errors import NashError

        acc, notes, state = self.accelerator, [], None
        if resume:
            state = latest_state(self.partial) if self.partial.is_dir() else None
            if state is None:
                raise NashError(
                    f"--resume given but {self.partial} holds no saved state; run without --resume to start"
                )
            check_state(state, fsdp=self.fsdp, extension=self.extension is not None)
            saved = self._saved_run().get("fingerprint", {})
            # A run.json of an earlier nash version lacks the later keys: not a change.
            changed = [
                key for key, value in fingerprint.items()
                if saved.get(key) != value and not (key in LATER_KEYS and key not in saved)
            ]
            models = [key for key in changed if key in MODEL_KEYS]
            if models:
                differences = "; ".join(
                    f"{key} {describe_identity(saved[key])} then, {describe_identity(fingerprint[key])} now" for key in models
                )
                raise NashError(
                    f"cannot resume: the {' and the '.join(models)} weights differ from the interrupted run's "
                    f"({differences}); resume with the {' and '.join('--' + key for key in models)} the run started "
                    "from, or pass --force without --resume to start over"
                )
            if changed:
                raise NashError(
                    f"cannot resume: {', '.join(changed)} differ from the interrupted run's; use the same "
                    "data and batch settings, or pass --force without --resume to start over"
                )
        elif self.partial.exists() and not force:
            raise NashError(
                f"{self.partial} holds an interrupted run; pass --resume to continue it, or --force to start over"
            )
        acc.wait_for_everyone()
        if acc.is_main_process:
            if state is None:
                shutil.rmtree(self.partial, ignore_errors=True)
                self.partial.mkdir(parents=True)
                write_text_atomic(
                    self.partial / RUN,
                    json.dumps({"fingerprint": fingerprint, "run": run_info}, indent=2, default=str),
                )
            else:
                previous = self._saved_run().get("run", {})
                ignored = {"resume", "force", "json_output"}
                changed = sorted(
                    k for k in set(previous) | set(run_info) if k not in ignored and previous.get(k) != run_info.get(k)
                )
                if changed:
                    notes.append(f"resumed with changed settings: {', '.join(changed)}")
        acc.wait_for_everyone()
        return state, notes

    def _saved_run(self) -> dict[str, Any]:
        """The interrupted run's `run.json` (read only when resuming: a damaged one is an error, not a
        run with no settings, which would report every setting as changed)."""
        from nash_cli.errors import NashError

        path = self.partial / RUN
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            problem = "is missing"
        except (OSError, ValueError):
            problem = "is cut short or not valid JSON"
        else:
            if isinstance(saved, dict):
                return saved
            problem = "is not a JSON object"
        raise NashError(
            f"cannot resume: {path} {problem}; start over with --force instead of --resume, or remove {self.partial}"
        )

    def save(self, step: int, model, optimizer, scheduler, progress: dict[str, Any]) -> None:
        """Writes the state after `step` steps and points `latest` at it; `progress` is the
        record resuming reads back (`read_progress`), including the best evaluation then."""
        acc = self.accelerator
        name = state_name(step)
        temporary = self.partial / f".tmp-{name}"
        if acc.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir()
        acc.wait_for_everyone()
        save_tensors(rng_state(), temporary / f"rng-{acc.process_index}.pt")
        if self.fsdp:
            acc.save_state(str(temporary / "accelerate"))
        if acc.is_main_process:
            from safetensors.torch import save_model

            if not self.fsdp:
                save_model(acc.unwrap_model(model), str(temporary / "model.safetensors"))
                save_tensors(optimizer.state_dict(), temporary / "optimizer.pt")
            save_tensors(scheduler.state_dict(), temporary / "scheduler.pt")
            if acc.scaler is not None:
                save_tensors(acc.scaler.state_dict(), temporary / "scaler.pt")
            if self.extension is not None:
                save_tensors(self.extension.state_dict(), temporary / "extension.pt")
            (temporary / PROGRESS).write_text(json.dumps(progress, indent=2))
        acc.wait_for_everyone()
        if acc.is_main_process:
            commit_dir(temporary, self.partial / name)
            write_text_atomic(self.partial / LATEST, name)
            self._resumable_best = progress.get("best")
            self.prune()
        acc.wait_for_everyone()

    def load(self, state: Path, model, optimizer, scheduler, *, seed: int) -> tuple[dict[str, Any], list[str]]:
        """Restores the state in `state` into the model, optimiser, scheduler, scaler, extension
        and random generators; returns its progress record and notes for the user. A process
        without a saved random state (the process count changed) is re-seeded from `seed`."""
        import torch

        acc, notes = self.accelerator, []
        progress = read_progress(state)
        if self.fsdp:
            acc.load_state(str(state / "accelerate"))
        else:
            from safetensors.torch import load_model

            load_model(acc.unwrap_model(model), str(state / "model.safetensors"), device=str(acc.device))
            optimizer.load_state_dict(load_tensors(state / "optimizer.pt", map_location=acc.device))
        scheduler.load_state_dict(load_tensors(state / "scheduler.pt"))
        if acc.scaler is not None and (state / "scaler.pt").is_file():
            acc.scaler.load_state_dict(load_tensors(state / "scaler.pt"))
        if self.extension is not None and (state / "extension.pt").is_file():
            self.extension.load_state_dict(load_tensors(state / "extension.pt", map_location=acc.device))
        rng = state / f"rng-{acc.process_index}.pt"
        if rng.is_file():
            set_rng_state(load_tensors(rng))
        else:
            torch.manual_seed(seed + progress["step"])
            notes.append("the number of processes changed since the state was saved; random state re-seeded")
        self.best = self._resumable_best = progress.get("best")
        return progress, notes

    def save_best(self, step: int, model, eval_loss: float) -> None:
        """Keeps the current weights (and extension state) as the best, found at `step`."""
        acc = self.accelerator
        name = best_name(step)
        temporary = self.partial / f".tmp-{name}"
        weights = acc.get_state_dict(model) if self.fsdp else None  # collective under FSDP
        if acc.is_main_process:
            from safetensors.torch import save_file, save_model

            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir()
            if weights is not None:
                save_file({k: v.contiguous() for k, v in dedupe(weights).items()}, str(temporary / "model.safetensors"))
            else:
                save_model(acc.unwrap_model(model), str(temporary / "model.safetensors"))
            if self.extension is not None:
                save_tensors(self.extension.state_dict(), temporary / "extension.pt")
            commit_dir(temporary, self.partial / name)
        self.best = {"step": step, "eval_loss": eval_loss}
        if acc.is_main_process:
            self.prune()
        acc.wait_for_everyone()

    def restore_best(self, model) -> dict[str, Any] | None:
        """Loads the best weights (and extension state) back. Under FSDP the weights are returned
        as a full state dict instead, for the unsharded copy that is saved; else None."""
        acc = self.accelerator
        directory = self.partial / best_name(self.best["step"])
        weights = None
        if self.fsdp:
            from safetensors.torch import load_file

            weights = load_file(str(directory / "model.safetensors"))
        else:
            from safetensors.torch import load_model

            load_model(acc.unwrap_model(model), str(directory / "model.safetensors"), device=str(acc.device))
        if self.extension is not None and (directory / "extension.pt").is_file():
            self.extension.load_state_dict(load_tensors(directory / "extension.pt", map_location=acc.device))
        return weights

    def prune(self) -> None:
        """Removes every state but the latest and the best weights that a resume could need."""
        keep = set()
        latest = latest_state(self.partial)
        if latest is not None:
            keep.add(latest.name)
        for best in (self._resumable_best, self.best):
            if best:
                keep.add(best_name(best["step"]))
        prune_states(self.partial, keep)
