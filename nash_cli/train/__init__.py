"""Training: the distillation objective and the loop that `distill` and `prune-encoder` share.

- `config`: `TrainConfig` (the hyperparameters every training stage shares) and `TrainResult`.
- `loop`: `train(config, student, features, teacher=..., extension=...)` on accelerate, the
  `Trainer` behind it, and `TrainingDiverged`.
- `objective`: the loss of a micro-batch (CE, KL, hidden-state MSE) and the hooks that capture
  hidden states; `losses` holds its tensor maths as pure functions.
- `sampling`: the deterministic data order of every step and process, and the data fingerprint.
- `state`: the resumable state in `<output>.partial/`, written atomically, and `StateStore`,
  which saves and loads it (and the best weights).
- `outputs`: `save_output(result, output, ...)`, the finished run as a nash checkpoint.
- `extension`: `TrainingExtension`, how a stage adds parameters, a loss term, state and files.
- `processes`: the accelerator of a run, and which process prints and writes.
- `distill`: the `distill` command as a library call, and the setup helpers (data, vocabulary
  check, layer maps) that `prune-encoder` reuses.

Progress on stderr goes through `nash_cli.progress`. Importing this package does not import
torch; its modules do.
"""
