"""Loading a checkpoint into transformers objects: its config, model and tokenizer.

Every problem a user can fix (a missing or corrupt checkpoint, a model type nash does not support,
weights that do not fit the config, code that would run without `--trust-remote-code`) becomes one
NashError line naming the fix. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nash_cli._hf import quiet_transformers
from nash_cli.artifact.checkpoints import (
    TOKENIZER_FILES,
    _first_line,
    check_checkpoint,
    is_local,
    read_config_dict,
    refuse_code,
)
from nash_cli.errors import NashError


@dataclass(kw_only=True)
class LoadOptions:
    """How a stage may load checkpoints (shared by every stage that reads a model)."""

    allow_pickle: bool = False
    """Accept pytorch_model.bin weights (loaded with weights_only=True)."""
    trust_remote_code: bool = False
    """Run a checkpoint's own modeling code (only if you trust it)."""


def _code_failure(source, error) -> str | None:
    """One line for transformers' "pass trust_remote_code=True" refusal, else None."""
    if "trust_remote_code" not in str(error):
        return None
    return (
        f"{source} contains its own code, which must run to load it; nash runs a checkpoint's own code "
        "only with --trust-remote-code (pass it only if you trust this checkpoint)"
    )


def load_config(source: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False):
    """Loads and validates a checkpoint's config without loading its weights.

    A local directory is checked in full first (config, family, readable weights, and, unless
    `trust_remote_code`, that no file of the checkpoint names its own code), so every problem
    surfaces before any heavy work. nash's compact configs (`encoder_heads`) are built with
    nash's own classes (`nash_cli.modeling`), never with the checkpoint's copy of the file.

    Raises:
        NashError: for a missing or invalid checkpoint, a model type nash does not support, or
            code that would run without `trust_remote_code`.
    """
    from huggingface_hub.errors import (
        StrictDataclassError,  # a config field of the wrong type
    )
    from transformers import AutoConfig

    from nash_cli import modeling
    from nash_cli.arch import family_of

    if is_local(source):
        config_dict = check_checkpoint(source, allow_pickle=allow_pickle)
        if not trust_remote_code:
            refuse_code(source)
        config = _nash_config(source, config_dict)
        if config is not None:
            family_of(config)
            return config
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError, KeyError, StrictDataclassError) as error:
            if is_local(source):
                raise NashError(_config_failure(source, error)) from None
            raise NashError(_code_failure(source, error) or _hub_failure(source, error)) from None
    family = modeling.family_of_config(config.to_dict())
    if family is not None and not isinstance(config, modeling.classes(family)[0]):
        # A compact checkpoint from the hub: AutoConfig built the stock class of its model type.
        config = modeling.classes(family)[0].from_dict(config.to_dict())
    family_of(config)
    return config


def _nash_config(source: str | Path, config_dict: dict[str, Any]):
    """The config of a nash compact checkpoint built with nash's packaged class, or None for any
    other config (never the checkpoint's copy of the modeling file)."""
    from huggingface_hub.errors import (
        StrictDataclassError,  # a config field of the wrong type
    )

    from nash_cli import modeling

    family = modeling.family_of_config(config_dict)
    if family is None:
        return None
    settings = {key: value for key, value in config_dict.items() if key != "model_type"}
    with quiet_transformers():
        try:
            config = modeling.classes(family)[0].from_dict(settings)
        except (ValueError, TypeError, KeyError, IndexError, StrictDataclassError) as error:
            raise NashError(_config_failure(source, error)) from None
    config._name_or_path = str(source)
    return config


def _config_failure(source, error) -> str:
    # Validation errors spread one finding over lines ("Validation error for field 'x':" then why).
    reason = " ".join(str(error).split()) or type(error).__name__
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return (
        f"{Path(source) / 'config.json'} does not describe a valid model ({reason}); "
        "fix that field or restore the config.json saved with these weights"
    )


def load_model(
    source: str | Path,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    dtype: Any = None,
    config: Any = None,
):
    """Loads a seq2seq checkpoint (local directory or hub id) in eval mode.

    Args:
        source: A local checkpoint directory, or a hub id where a network exists.
        allow_pickle: Accept `pytorch_model.bin` weights (loaded with `weights_only=True`).
        trust_remote_code: Let transformers run the checkpoint's own modeling code. Only ever set
            when the user asked for it; nash's own compact models load without it.
        dtype: Optional torch dtype to load the weights in.
        config: The checkpoint's config, when `load_config` already read it.

    Raises:
        NashError: for a missing or invalid checkpoint, a model type nash does not support, code
            that would run without `trust_remote_code`, weights that do not fit the config, or a
            pickle that is not a plain weights-only one.
    """
    import pickle

    from transformers import AutoModelForSeq2SeqLM

    from nash_cli import modeling
    from nash_cli.arch import family_of

    if config is None:
        config = load_config(source, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    nash_family = family_of(config).name if getattr(config, "encoder_heads", None) is not None else None
    if nash_family is not None:
        # nash's own class, never the copy of its modeling file beside the weights.
        loader = modeling.classes(nash_family)[1].from_pretrained
    else:
        loader = AutoModelForSeq2SeqLM.from_pretrained
        kwargs["trust_remote_code"] = trust_remote_code
    with quiet_transformers():
        try:
            model, info = loader(
                str(source),
                config=config,
                use_safetensors=None if allow_pickle else True,
                weights_only=True,
                output_loading_info=True,
                # Report shapes that differ instead of raising: nash refuses the model below,
                # naming the first tensor, and never returns it.
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        except pickle.UnpicklingError:
            raise NashError(
                f"the pickle weights of {source} are not a safe weights-only pickle (they name Python objects "
                "beyond tensors, which unpickling would run); nash will not load them: convert them to "
                "safetensors where you trust their origin"
            ) from None
        except (OSError, ValueError) as error:
            if is_local(source):
                raise NashError(f"could not load {source}: {_first_line(error)}") from None
            raise NashError(_code_failure(source, error) or _hub_failure(source, error)) from None
    mismatched = sorted((str(key), tuple(saved), tuple(built)) for key, saved, built in info.get("mismatched_keys") or ())
    missing = sorted(str(key) for key in info.get("missing_keys") or ())
    unexpected = sorted(str(key) for key in info.get("unexpected_keys") or ())
    if mismatched:
        key, saved, built = mismatched[0]
        raise NashError(_shape_failure(source, f"{key} is {saved} in the weights but {built} in the config's model"))
    if missing:
        raise NashError(_shape_failure(source, f"the config's model has {missing[0]}, the weights do not"))
    if unexpected:
        raise NashError(_shape_failure(source, f"the weights have {unexpected[0]}, the config's model does not"))
    return model.eval()


def _shape_failure(source, detail: str) -> str:
    return (
        f"the weights of {source} do not fit its config.json ({detail}); restore the config.json "
        "saved with these weights"
    )


def _hub_failure(source, error) -> str:
    reason = _first_line(error)
    if len(reason) > 120:  # the hub's messages run to paragraphs; the start says what failed
        reason = reason[:117] + "..."
    return (
        f"no directory {source} exists here, and nash could not fetch a model of that name from the hub "
        f"({reason}); check the path, or the model id and your network"
    )


def load_tokenizer(source: str | Path, *, trust_remote_code: bool = False):
    """Loads the tokenizer stored with a checkpoint.

    `trust_remote_code` is always passed to transformers explicitly, so it never prompts; a local
    checkpoint whose `tokenizer_config.json` names its own code is refused unless it is true.

    Raises:
        NashError: when the checkpoint has no tokenizer files, or its tokenizer needs code that
            may not run.
    """
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if is_local(source):
        if not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
            raise NashError(
                f"{source} has no tokenizer files; save the tokenizer into the checkpoint "
                "(tokenizer.save_pretrained(dir)) or copy them from the original model"
            )
        if not trust_remote_code:
            refuse_code(source)
        if (Path(source) / "config.json").is_file():
            # AutoTokenizer reads the config first; given nash's own class it never imports the
            # copy of the modeling file beside the weights, even with trust_remote_code.
            config = _nash_config(source, read_config_dict(source))
            if config is not None:
                kwargs["config"] = config
    with quiet_transformers():
        try:
            return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code, **kwargs)
        except (OSError, ValueError) as error:
            failure = _code_failure(source, error)
            raise NashError(failure or f"could not load the tokenizer of {source}: {_first_line(error)}") from None
