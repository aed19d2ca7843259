"""The training loop: distillation (or plain fine-tuning) of a seq2seq student on `accelerate`.

One loop serves every stage that trains: `distill`, and `prune-encoder` through a
`TrainingExtension`. It runs on CPU, one GPU, or many processes started by `accelerate launch`
or `torchrun` (DDP, or FSDP when accelerate's config asks for it), with mixed precision where
the device supports it.

Determinism and data parallelism. The loop does its own sampling (`nash_cli.train.sampling`):
optimiser step s takes the global batch at position s of a seeded per-epoch order, and each
process takes its slice of it. Every loss term (`nash_cli.train.objective`) is a sum over the
step's tokens divided by the number of valid tokens in the *whole* global batch, so one process
with batch 8 and two processes with batch 4 compute the same gradient. A resumed run therefore
only needs the step number to find its place in the data.

Resumable states are described in `nash_cli.train.state`; `nash_cli.train.outputs.save_output`
writes the finished run.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nash_cli.artifact import releases_outputs
from nash_cli.data import IGNORE_INDEX, Features, Seq2SeqCollator
from nash_cli.errors import NashError
from nash_cli.progress import Progress
from nash_cli.train import state as st
from nash_cli.train.config import TrainConfig, TrainResult
from nash_cli.train.extension import TrainingExtension
from nash_cli.train.objective import TERMS, Objective
from nash_cli.train.processes import make_accelerator
from nash_cli.train.optimizer import freeze_embeddings, linear_schedule
from nash_cli.train.sampling import DataOrder, features_fingerprint


class TrainingDiverged(NashError):
    """The loss became NaN or infinite; the last saved state is kept for `--resume`."""


class Trainer:
    """One training run. Use `train(...)`; the class only keeps the loop's state together."""

    def __init__(
        self,
        config: TrainConfig,
        student,
        train_features: Sequence[Features],
        *,
        pad_token_id: int,
        teacher=None,
        eval_features: Sequence[Features] | None = None,
        encoder_layer_map: Sequence[int] | None = None,
        decoder_layer_map: Sequence[int] | None = None,
        extension: TrainingExtension | None = None,
        run_info: dict[str, Any] | None = None,
        accelerator=None,
        progress: Progress | str | None = None,
        models: dict[str, str | None] | None = None,
    ):
        self.config = config
        self.progress = progress
        self.train_features = list(train_features)
        self.eval_features = list(eval_features) if eval_features else None
        self.collate = Seq2SeqCollator(pad_token_id=pad_token_id)
        self.teacher = teacher
        self.extension = extension
        self.notes: list[str] = []
        self.run_info = dict(run_info or {})
        config.check()
        if not self.train_features:
            raise NashError("the training data has no examples; point --data at a non-empty file")

        self.accelerator = accelerator or make_accelerator(config.mixed_precision)
        acc = self.accelerator
        self.world = acc.num_processes
        self.rank = acc.process_index
        self.device = acc.device
        self.fsdp = str(acc.distributed_type).endswith("FSDP")

        self.data = DataOrder(
            len(self.train_features),
            seed=config.seed,
            batch_size=config.batch_size,
            grad_accum=config.grad_accum,
            processes=self.world,
            rank=self.rank,
        )
        self.global_batch = self.data.global_batch
        self.steps_per_epoch = self.data.steps_per_epoch
        self.total_steps = config.total_steps(self.steps_per_epoch)
        self.objective = Objective(config, teacher, encoder_layer_map, decoder_layer_map)

        self.partial = st.partial_dir(config.output)
        self.states = st.StateStore(self.partial, self.accelerator, fsdp=self.fsdp, extension=extension)
        self.student = student
        self.fingerprint = {
            "data": features_fingerprint(self.train_features),
            "examples": len(self.train_features),
            "global_batch_size": self.global_batch,
            "total_steps": self.total_steps,
            "seed": config.seed,
            # the examples best-checkpoint selection compares eval losses on (None: no eval data)
            "eval_data": features_fingerprint(self.eval_features) if self.eval_features else None,
            # the student's and teacher's identities (`state.model_identity`): resuming with other weights is refused
            **{key: value for key, value in (models or {}).items() if key in st.MODEL_KEYS},
        }

    # ----------------------------------------------------------------- checks and setup

    def _prepare_directory(self) -> Path | None:
        """Checks the output and staging directory; returns the state to resume from, if any."""
        from nash_cli.artifact import check_output

        c = self.config
        check_output(c.output, c.force)
        state, notes = self.states.prepare(self.fingerprint, self.run_info, resume=c.resume, force=c.force)
        self.notes.extend(notes)
        return state

    def _build_optimizer(self, model):
        c = self.config
        extension_groups = self.extension.param_groups() if self.extension is not None else []
        extension_ids = {id(p) for group in extension_groups for p in group["params"]}
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad or id(parameter) in extension_ids:
                continue
            if c.weight_decay > 0 and parameter.ndim >= 2 and "norm" not in name.lower():
                decay.append(parameter)
            else:
                no_decay.append(parameter)
        groups = []
        if decay:
            groups.append({"params": decay, "weight_decay": c.weight_decay, "lr": c.lr, "scheduled": True})
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr": c.lr, "scheduled": True})
        for group in extension_groups:
            groups.append({"weight_decay": 0.0, "scheduled": False, **group})
        self.model_parameters = decay + no_decay
        self.extension_parameters = [p for group in extension_groups for p in group["params"]]
        optimizer = torch.optim.AdamW(groups, lr=c.lr)
        schedule = linear_schedule(c.warmup_steps, self.total_steps)
        constant = lambda step: 1.0  # noqa: E731
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [schedule if group.get("scheduled") else constant for group in groups]
        )
        return optimizer, scheduler

    # ----------------------------------------------------------------- data

    def _to_device(self, features: Sequence[Features]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in self.collate(features).items()}

    # ----------------------------------------------------------------- evaluation

    @torch.no_grad()
    def _evaluate(self, model) -> dict[str, float]:
        acc = self.accelerator
        evaluated = model if self.fsdp else acc.unwrap_model(model)
        evaluated.eval()
        size = self.config.batch_size
        batches = [self.eval_features[i : i + size] for i in range(0, len(self.eval_features), size)]
        sums = torch.zeros(3, device=self.device, dtype=torch.float64)
        rounds = math.ceil(len(batches) / self.world)
        for r in range(rounds):
            index = r * self.world + self.rank
            real = index < len(batches)
            if not real and not self.fsdp:
                continue
            batch = self._to_device(batches[min(index, len(batches) - 1)])
            with acc.autocast():
                _, (ce, kl, _, _) = self.objective(evaluated, acc.unwrap_model(model), batch, n_target=1, n_source=1)
            if real:
                sums += torch.stack([ce.double(), kl.double(), (batch["labels"] != IGNORE_INDEX).sum().double()])
        evaluated.train()
        if self.world > 1:
            sums = acc.reduce(sums, reduction="sum")
        ce, kl, count = (sums / torch.stack([sums[2], sums[2], torch.ones_like(sums[2])])).tolist()
        result = {"eval_ce": ce, "eval_loss": ce}
        if self.teacher is not None:
            result["eval_kl"] = kl
        return result

    # ----------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        """Trains to the last step (or resumes there) and returns the selected weights.

        If the run fails before any resumable state exists, its staging directory is removed, so
        a failed first attempt does not block the next one.
        """
        resume_from = self._prepare_directory()
        try:
            self.setup(resume_from)
            return self._loop()
        except BaseException:
            if self.accelerator.is_main_process and st.latest_state(self.partial) is None:
                shutil.rmtree(self.partial, ignore_errors=True)
            raise

    def setup(self, resume_from: Path | None = None) -> None:
        """Places the models, installs the hidden-state hooks, builds the optimiser and, when
        resuming, loads the state. After it, `train_step()` may be called."""
        c, acc = self.config, self.accelerator
        torch.manual_seed(c.seed)
        random.seed(c.seed)

        student = self.student
        if c.freeze_embeddings:
            self.notes.extend(freeze_embeddings(student))
        student.to(self.device)
        student.train()
        if self.extension is not None:
            self.extension.prepare(student, self.device)
        if self.teacher is not None:
            self.teacher.to(self.device).eval().requires_grad_(False)
        self.objective.attach(student, acc.autocast)

        optimizer, self.scheduler = self._build_optimizer(student)
        self.model, self.optimizer = acc.prepare(student, optimizer)
        self.unwrapped = acc.unwrap_model(self.model)
        inside = {id(p) for p in self.model.parameters()}
        self.outside = [p for p in self.extension_parameters if id(p) not in inside]
        extension_ids = {id(p) for p in self.extension_parameters}
        self.clip_parameters = [p for p in self.model.parameters() if p.requires_grad and id(p) not in extension_ids]
        if self.fsdp:  # accelerate clips FSDP models only when given exactly model.parameters()
            self.clip_parameters = list(self.model.parameters())

        self._final_weights = None
        self.step, self.last_train, self.last_eval, self.resumed = 0, {}, None, None
        self.extension_values: dict[str, float] = {}
        if resume_from is not None:
            progress, notes = self.states.load(
                resume_from, self.model, self.optimizer, self.scheduler, seed=c.seed
            )
            self.notes.extend(notes)
            self.step = self.resumed = progress["step"]
            self.last_train, self.last_eval = progress.get("train", {}), progress.get("eval")
            if acc.is_main_process:
                st.truncate_log(self.partial / st.LOG, self.step)
                self.states.prune()
            acc.wait_for_everyone()

    def train_step(self) -> tuple[torch.Tensor, float]:
        """One optimiser step over this process's share of the next global batch.

        Returns the loss terms (`TERMS`, summed over processes: the global means) and the
        learning rate the step used; advances `self.step`.

        Raises:
            TrainingDiverged: a term is NaN or infinite (checked before the weights change).
        """
        c, acc, model, step = self.config, self.accelerator, self.model, self.step
        micro, global_batch = self.data.step_examples(step)
        n_target = sum(len(self.train_features[i].labels) for i in global_batch)
        n_source = sum(len(self.train_features[i].input_ids) for i in global_batch)
        terms = torch.zeros(len(TERMS), device=self.device, dtype=torch.float64)
        for m, indices in enumerate(micro):
            batch = self._to_device([self.train_features[i] for i in indices])
            sync = m == len(micro) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                loss, parts = self.objective(model, self.unwrapped, batch, n_target=n_target, n_source=n_source)
                # DDP averages gradients over processes; each process's share of the global
                # mean is its sum / global count, so scale by the process count.
                total = loss * self.world
                extension_loss = None
                if self.extension is not None:
                    extension_loss, self.extension_values = self.extension.loss(step, self.total_steps)
                    total = total + extension_loss / len(micro)
                acc.backward(total)
            extra = extension_loss.detach().double() / len(micro) / self.world if extension_loss is not None else 0.0
            terms += torch.stack([loss.detach().double() + extra, *(p.detach().double() for p in parts)])
        if self.outside and self.world > 1:
            for p in self.outside:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= self.world
        if self.world > 1:
            terms = acc.reduce(terms, reduction="sum")
        if not torch.isfinite(terms).all():
            values = dict(zip(TERMS, terms.tolist()))
            latest = st.latest_state(self.partial)
            kept = f"the last saved state ({latest.name}) is kept in {self.partial}" if latest else "no state was saved yet"
            # Only a run computing in fp16 is told about bf16: the weights themselves are float32.
            fp16 = " (or use bf16 instead of fp16)" if str(acc.mixed_precision) == "fp16" else ""
            raise TrainingDiverged(
                f"the loss became {values['loss']} at step {step + 1} "
                f"({', '.join(f'{k} {v:.4g}' for k, v in values.items() if k != 'loss')}); {kept}; "
                f"lower --lr or raise --warmup-steps{fp16}, then --resume"
            )
        if c.max_grad_norm > 0:
            acc.clip_grad_norm_(self.clip_parameters, c.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step + 1
        if self.extension is not None:
            self.extension.after_optimizer_step(self.step)
        return terms, lr

    def _loop(self) -> TrainResult:
        c, acc, model = self.config, self.accelerator, self.model
        log_path = self.partial / st.LOG
        window = torch.zeros(len(TERMS), device=self.device, dtype=torch.float64)
        window_steps, window_start = 0, time.perf_counter()
        evaluated_at = None
        started = time.perf_counter()
        first_step = self.step
        eval_every = c.eval_every or self.steps_per_epoch

        reporter, owned = self._reporter()
        with reporter if owned else contextlib.nullcontext(reporter):
            reporter.update(total=self.total_steps, completed=self.step)
            while self.step < self.total_steps:
                terms, lr = self.train_step()
                step = self.step
                window += terms
                window_steps += 1
                if step % c.log_every == 0 or step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    means = (window / window_steps).tolist()
                    self.last_train = {name: value for name, value in zip(TERMS, means) if self.objective.term_on(name)}
                    self.last_train.update(self.extension_values)
                    if acc.is_main_process:
                        st.append_log(
                            log_path,
                            {
                                "step": step,
                                "epoch": round(step / self.steps_per_epoch, 4),
                                "lr": lr,
                                **self.last_train,
                                "steps_per_s": window_steps / elapsed if elapsed > 0 else None,
                            },
                        )
                    window.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if self.eval_features and (step % eval_every == 0 or step == self.total_steps):
                    self._evaluate_and_keep(step)
                    evaluated_at = step
                if c.save_every and step % c.save_every == 0 and step < self.total_steps:
                    progress = {
                        "step": step,
                        "epoch": step // self.steps_per_epoch,
                        "batch_in_epoch": step % self.steps_per_epoch,
                        "examples_seen": step * self.global_batch,
                        "best": self.states.best,
                        "train": self.last_train,
                        "eval": self.last_eval,
                        "processes": self.world,
                    }
                    self.states.save(step, model, self.optimizer, self.scheduler, progress)
                shown = [f"{k} {v:.4f}" for k, v in self.last_train.items() if k in ("loss", "kl")]
                reporter.advance(1, status=" ".join([*shown, f"lr {lr:.1e}"]))

        step = self.step
        if self.eval_features and evaluated_at != step:
            self._evaluate_and_keep(step)
        seconds = time.perf_counter() - started
        selected = "last"
        best = self.states.best
        if c.keep == "best" and best is not None:
            selected = "best"
            if best["step"] != step:
                self._final_weights = self.states.restore_best(model)
        self.objective.detach()
        final = self._materialise(model) if self.fsdp else self.unwrapped
        return TrainResult(
            model=final,
            steps=step,
            epochs=step / self.steps_per_epoch,
            train=self.last_train,
            eval=self.last_eval,
            best=self.states.best,
            selected=selected,
            resumed_from=self.resumed,
            seconds=seconds,
            steps_per_second=(step - first_step) / seconds if seconds > 0 else 0.0,
            partial=self.partial,
            objective=self.objective.settings(),
            global_batch_size=self.global_batch,
            examples=len(self.train_features),
            notes=self.notes,
            accelerator=acc,
        )

    def _reporter(self) -> tuple[Progress, bool]:
        """Where this process reports progress, and whether the loop owns (and closes) it."""
        c, given = self.config, self.progress
        if not self.accelerator.is_main_process:
            return Progress("train"), True
        if isinstance(given, Progress):
            return given, False
        description = given or ("distill" if self.teacher is not None else "train")
        reporter = Progress.for_stream(
            description, self.total_steps, every=c.log_every, completed=self.step, disable=not c.show_progress
        )
        return reporter, True

    def _evaluate_and_keep(self, step: int) -> None:
        self.last_eval = self._evaluate(self.model)
        if self.accelerator.is_main_process:
            st.append_log(self.partial / st.LOG, {"step": step, **self.last_eval})
        best = self.states.best
        if best is None or self.last_eval["eval_loss"] < best["eval_loss"]:
            self.states.save_best(step, self.model, self.last_eval["eval_loss"])

    def _materialise(self, model):
        """Under FSDP: a full, unsharded CPU copy of the student (main process) for saving."""
        acc = self.accelerator
        weights = self._final_weights if self._final_weights is not None else acc.get_state_dict(model)
        if not acc.is_main_process:
            return None
        unwrapped = acc.unwrap_model(model)
        copy = type(unwrapped)(unwrapped.config)
        copy.load_state_dict(weights, strict=False)
        return copy.eval()

@releases_outputs  # a run that fails before its output is written leaves no lock behind
def train(
    config: TrainConfig,
    student,
    train_features: Sequence[Features],
    *,
    pad_token_id: int,
    teacher=None,
    eval_features: Sequence[Features] | None = None,
    encoder_layer_map: Sequence[int] | None = None,
    decoder_layer_map: Sequence[int] | None = None,
    extension: TrainingExtension | None = None,
    run_info: dict[str, Any] | None = None,
    accelerator=None,
    progress: Progress | str | None = None,
    models: dict[str, str | None] | None = None,
) -> TrainResult:
    """Trains `student`, distilling from `teacher` when one is given, and returns the result.

    Args:
        config: Hyperparameters and the output path (state goes to `<output>.partial/`).
        student: A seq2seq model (T5 / BART family); trained in place.
        train_features: Tokenised training examples (`nash_cli.data.tokenize_examples`).
        pad_token_id: The tokenizer's pad id, for dynamic padding of inputs.
        teacher: The teacher model, or None for plain fine-tuning (cross-entropy only).
        eval_features: Held-out examples for eval loss and best-checkpoint selection.
        encoder_layer_map: Teacher encoder layer per student encoder layer (hidden loss);
            None skips the encoder hidden loss.
        decoder_layer_map: Teacher decoder layer per student decoder layer; None skips it.
        extension: Extra parameters, loss and state (see `TrainingExtension`).
        run_info: Settings recorded in `run.json`; a resumed run notes any that changed.
        accelerator: An existing accelerate.Accelerator (default: one is made).
        progress: Where the main process reports progress: a `nash_cli.progress.Progress`, used
            as given (the loop sets its total and starting step, reports every step, and leaves
            closing it to the caller), or the description of the reporter to build from
            `config.show_progress` and `config.log_every` (a Rich bar on a terminal, else a line
            every `log_every` steps); default "distill" with a teacher, "train" without.
        models: What identifies the student and the teacher (`{"student": ..., "teacher": ...}`,
            from `nash_cli.train.state.model_identity`), recorded in `run.json`: `resume` refuses
            a run whose models changed since. None records nothing.

    Raises:
        NashError: bad settings, an existing output without `force`, an interrupted run without
            `resume` or `force`, or a state that does not match on `resume`.
        TrainingDiverged: the loss became NaN or infinite.
    """
    return Trainer(
        config,
        student,
        train_features,
        pad_token_id=pad_token_id,
        teacher=teacher,
        eval_features=eval_features,
        encoder_layer_map=encoder_layer_map,
        decoder_layer_map=decoder_layer_map,
        extension=extension,
        run_info=run_info,
        accelerator=accelerator,
        progress=progress,
        models=models,
    ).run()


__all__ = ["Trainer", "TrainingDiverged", "freeze_embeddings", "linear_schedule", "train"]
