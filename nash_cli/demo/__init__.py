"""The offline demo: a task generated from code, a teacher trained from scratch, the full pipeline."""
