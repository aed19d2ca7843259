"""Model classes for compacted checkpoints whose encoder layers have their own widths.

Each family has a self-contained file here that imports only torch and transformers:
`modeling_nash_t5.py`, and `modeling_nash_bart_like.py` for BART and its relatives (Marian,
M2M100 / NLLB, mBART, Pegasus: one file, a config and a model class per family; compact BART
checkpoints of earlier nash versions name `modeling_nash_bart.py`, their own copy, which nash never
imports). `nash compact` copies the family's file into its output and names its classes in the
config's `auto_map`, so stock transformers loads the result with `trust_remote_code=True`.

The config keeps the stock `model_type` ("t5", "bart", "marian", ...) and adds `encoder_heads` and
`encoder_ffn_dims`. A nash model type would make every Auto class, AutoTokenizer included, ask
"run the custom code? [y/N]" before reading the config (AutoConfig does not know the type); with
the stock type, AutoTokenizer reads a stock config and loads the stock tokenizer without code.
Inside nash, `artifact.load_config` recognises these configs by `encoder_heads` and builds them
with the classes here, so nash never runs a checkpoint's copy of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Modeling file, config class and model class of each family, as `auto_map` names them.
FILES = {
    "t5": ("modeling_nash_t5.py", "NashT5Config", "NashT5ForConditionalGeneration"),
    "bart": ("modeling_nash_bart_like.py", "NashBartConfig", "NashBartForConditionalGeneration"),
    "marian": ("modeling_nash_bart_like.py", "NashMarianConfig", "NashMarianMTModel"),
    "m2m_100": ("modeling_nash_bart_like.py", "NashM2M100Config", "NashM2M100ForConditionalGeneration"),
    "mbart": ("modeling_nash_bart_like.py", "NashMBartConfig", "NashMBartForConditionalGeneration"),
    "pegasus": ("modeling_nash_bart_like.py", "NashPegasusConfig", "NashPegasusForConditionalGeneration"),
}

#: The model types earlier nash versions gave compact outputs (still loaded).
LEGACY_MODEL_TYPES = {"nash_t5": "t5", "nash_bart": "bart"}


def family_of_config(config: Mapping[str, Any]) -> str | None:
    """The family (a key of `FILES`) whose nash classes a `config.json` dict needs, or None.

    A config needs them when it lists per-layer encoder widths (`encoder_heads`), or carries a
    model type older nash versions wrote (`nash_t5`, `nash_bart`).
    """
    model_type = config.get("model_type")
    if model_type in LEGACY_MODEL_TYPES:
        return LEGACY_MODEL_TYPES[model_type]
    if config.get("encoder_heads") is not None and model_type in FILES:
        return model_type
    return None


def classes(family: str):
    """The `(config_class, model_class)` of a family (a key of `FILES`)."""
    import importlib

    file, config_name, model_name = FILES[family]
    module = importlib.import_module(f"nash_cli.modeling.{file.removesuffix('.py')}")
    return getattr(module, config_name), getattr(module, model_name)


def auto_map(family: str) -> dict[str, str]:
    """The config's `auto_map` entry that points stock transformers at the copied modeling file."""
    module = FILES[family][0].removesuffix(".py")
    return {
        "AutoConfig": f"{module}.{FILES[family][1]}",
        "AutoModelForSeq2SeqLM": f"{module}.{FILES[family][2]}",
    }
