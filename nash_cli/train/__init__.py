"""Training: the distillation objective and the loop that `distill` and `prune-encoder` share.

- `losses`: CE, T^2-scaled KL and layer-mapped hidden-state MSE, as pure tensor functions.
- `engine`: `train(config, student, features, teacher=..., extension=...)` on accelerate, and
  `save_output(result, output, ...)`.
- `extension`: `TrainingExtension`, how a stage adds parameters, a loss term, state and files.
- `state`: the resumable state in `<output>.partial/`, written atomically.
- `distill`: the `distill` command as a library call, and the setup helpers (data, vocabulary
  check, layer maps) that `prune-encoder` reuses.

Importing this package does not import torch; its modules do.
"""
