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
    read_json_object,
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


def load_config(
    source: str | Path, *, allow_pickle: bool = False, trust_remote_code: bool = False, cached_only: bool = False
):
    """Loads and validates a checkpoint's config without loading its weights.

    A local directory is checked in full first (config, family, readable weights, and, unless
    `trust_remote_code`, that no file of the checkpoint names its own code), so every problem
    surfaces before any heavy work. nash's compact configs (`encoder_heads`) are built with
    nash's own classes (`nash_cli.modeling`), never with the checkpoint's copy of the file.

    `cached_only` reads a hub checkpoint's config from the local Hugging Face cache and never
    asks the hub (a reader that can do without it, such as `nash report`, must not wait on a
    network that is not there).

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
            config = AutoConfig.from_pretrained(
                str(source), trust_remote_code=trust_remote_code, local_files_only=cached_only
            )
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
    if is_local(source):
        check_generation_config(source, vocab_size=getattr(config, "vocab_size", None))
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
    refuse_non_finite(model, source)
    for tensor in family_of(model).fixed_parameters(model):
        tensor.requires_grad_(False)  # a sinusoidal table: never trained (see ArchFamily.fixed_parameters)
    return model.eval()


def refuse_non_finite(model, source) -> None:
    """NashError naming the first tensor of `model` that holds NaN or an infinity.

    Such weights generate garbage that still looks like output (empty predictions are scored, an
    export "verifies", bench times it), so they are refused where they are loaded. One pass of
    `isfinite` over the weights: far cheaper than reading them was.
    """
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            bad = tensor[~torch.isfinite(tensor)]
            kind = "NaN" if bool(torch.isnan(bad).any()) else "infinite"
            raise NashError(
                f"the weights of {source} hold {kind} values ({name}); such a model only generates garbage: "
                "restore the weights from before the run that produced them (a diverged training run "
                "writes such weights: lower --lr, or use bf16 rather than fp16)"
            )


#: The generation config's token ids, each an id of the model's vocabulary where set.
GENERATION_TOKEN_IDS = (
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


def check_generation_config(source: str | Path, *, vocab_size: int | None = None) -> None:
    """NashError naming `generation_config.json` of a local checkpoint when it cannot be used.

    transformers ignores a generation config it cannot parse (generating with beam 1 and 20 new
    tokens instead of the checkpoint's settings, without a word), fails with a TypeError on a
    JSON list, and accepts token ids past the vocabulary; nash refuses each, naming the file.
    A checkpoint without the file passes (the model's config supplies the defaults).

    Args:
        source: A local checkpoint directory.
        vocab_size: The model's vocabulary size; token ids must fall below it.
    """
    from transformers import GenerationConfig

    path = Path(source) / "generation_config.json"
    if not path.is_file():
        return
    fix = "fix it, or delete it to use the model config's defaults"
    document = read_json_object(path, fix=fix)
    with quiet_transformers():
        try:
            GenerationConfig.from_dict(dict(document)).validate()
        except (ValueError, TypeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            if len(reason) > 200:
                reason = reason[:197] + "..."
            raise NashError(f"{path} is not a valid generation config ({reason}); {fix}") from None
    for key in GENERATION_TOKEN_IDS:
        value = document.get(key)
        for token in value if isinstance(value, list) else [value]:
            if token is None:
                continue
            if not isinstance(token, int) or isinstance(token, bool):
                raise NashError(f"{path} sets {key} to {token!r}, not a token id; {fix}")
            if vocab_size is not None and not token < vocab_size:
                raise NashError(
                    f"{path} sets {key} to {token}, past the model's vocabulary of {vocab_size} tokens "
                    f"(ids 0 to {vocab_size - 1}); {fix}"
                )


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
            tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code, **kwargs)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError) as error:
            failure = _code_failure(source, error)
            if failure is None and is_local(source):
                failure = _tokenizer_files_failure(Path(source), error)
            raise NashError(failure or f"could not load the tokenizer of {source}: {_first_line(error)}") from None
    if is_local(source) and (Path(source) / "config.json").is_file():
        check_tokenizer_fits(source, tokenizer, read_config_dict(source).get("vocab_size"))
    if tokenizer.pad_token is None:
        # Batches are padded (eval, bench, training); without a pad token that is a ValueError
        # deep inside transformers. It is lost with tokenizer_config.json, where it is recorded.
        where = Path(source) / "tokenizer_config.json"
        missing = is_local(source) and not where.is_file()
        raise NashError(
            f"the tokenizer of {source} has no padding token"
            + (
                " because its tokenizer_config.json is missing; copy tokenizer_config.json from the model it "
                "came from (tokenizer.save_pretrained(dir) writes it)"
                if missing
                else "; set pad_token in its tokenizer_config.json (T5 and BART use \"<pad>\")"
            )
        )
    return tokenizer


def check_tokenizer_fits(source, tokenizer, vocab_size: Any) -> None:
    """NashError when `tokenizer` has ids past the model's embedding (`vocab_size` rows).

    Such ids fail with an IndexError deep inside eval or training, and an export of them is a
    model that cannot read its own tokens. A tokenizer smaller than the embedding is normal (T5
    pads its embedding to a multiple of 128).
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        return
    size = len(tokenizer)
    if size > vocab_size:
        raise NashError(
            f"the tokenizer of {source} has {size} tokens but the model's embedding has {vocab_size} rows "
            f"(ids from {vocab_size} on index nothing); save the tokenizer that belongs to these weights into "
            "the checkpoint, or resize the embedding (model.resize_token_embeddings(len(tokenizer))) and save both"
        )


#: SentencePiece model files a tokenizer may be read from (`TOKENIZER_FILES`).
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "source.spm", "target.spm")


def _tokenizer_files_failure(directory: Path, error: BaseException) -> str | None:
    """Which of the checkpoint's tokenizer files made loading fail, said with the fix; None when
    none of them is to blame.

    transformers words these failures after its last fall-back, not the file: a corrupt
    `spiece.model` ends in "`tiktoken` is required", a `tokenizer.json` without its
    `tokenizer_config.json` in a TypeError of the class it guessed from the model type.
    """
    for name in SENTENCEPIECE_FILES:
        path = directory / name
        if path.is_file():
            problem = _sentencepiece_problem(path)
            if problem is not None:
                return (
                    f"{path} is not a readable SentencePiece model ({problem}); copy it again from the original "
                    "model (tokenizer.save_pretrained(dir) writes it)"
                )
    if not (directory / "tokenizer_config.json").is_file():
        present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
        return (
            f"the tokenizer of {directory} could not be read from {', '.join(present)} alone "
            f"({_first_line(error)}): its tokenizer_config.json is missing, so its class and special tokens are "
            "unknown; copy tokenizer_config.json from the original model (tokenizer.save_pretrained(dir) writes it)"
        )
    return None


def _sentencepiece_problem(path: Path) -> str | None:
    """Why `path` is not a SentencePiece model sentencepiece can load, or None (None too when
    sentencepiece is not installed: transformers then says what to install)."""
    try:
        import sentencepiece
    except ImportError:
        return None
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(path))
    except Exception as error:  # sentencepiece raises RuntimeError / OSError with its own wording
        return _first_line(error)
    return None
