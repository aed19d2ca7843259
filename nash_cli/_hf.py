"""Small adapters around transformers' global state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silences transformers' warnings and its own progress bars for the duration.

    nash draws its own progress, and transformers warns about things nash does on purpose
    (an untied T5 v1.1 lm_head, a model built from a state dict). The hub client's warnings go
    too: its "Retrying in 8s" lines would come before the one line nash says when a model
    cannot be fetched.
    """
    import logging as std_logging

    from transformers.utils import logging

    hub = std_logging.getLogger("huggingface_hub")
    hub_level = hub.level
    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    hub.setLevel(std_logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(hub_level)
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
