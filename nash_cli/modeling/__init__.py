"""Model classes for compacted checkpoints whose encoder layers have their own widths.

Each family has one self-contained file here (`modeling_nash_t5.py`, `modeling_nash_bart.py`)
that imports only torch and transformers. `nash compact` copies the family's file into its
output and names it in the config's `auto_map`, so stock transformers loads the result with
`trust_remote_code=True`. Inside nash, `register_auto_classes()` makes the same classes known to the Auto
classes, so nash loads compact checkpoints without remote code.
"""

from __future__ import annotations

#: Modeling file, config class and model class of each family, as `auto_map` names them.
FILES = {
    "t5": ("modeling_nash_t5.py", "NashT5Config", "NashT5ForConditionalGeneration"),
    "bart": ("modeling_nash_bart.py", "NashBartConfig", "NashBartForConditionalGeneration"),
}

_registered = False


def register_auto_classes() -> None:
    """Registers the nash model types with AutoConfig and AutoModelForSeq2SeqLM (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from nash_cli.modeling.modeling_nash_bart import NashBartConfig, NashBartForConditionalGeneration
    from nash_cli.modeling.modeling_nash_t5 import NashT5Config, NashT5ForConditionalGeneration

    for config_class, model_class in (
        (NashT5Config, NashT5ForConditionalGeneration),
        (NashBartConfig, NashBartForConditionalGeneration),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForSeq2SeqLM.register(config_class, model_class, exist_ok=True)
    _registered = True


def classes(family: str):
    """The `(config_class, model_class)` of a family ("t5" or "bart")."""
    if family == "t5":
        from nash_cli.modeling.modeling_nash_t5 import NashT5Config, NashT5ForConditionalGeneration

        return NashT5Config, NashT5ForConditionalGeneration
    from nash_cli.modeling.modeling_nash_bart import NashBartConfig, NashBartForConditionalGeneration

    return NashBartConfig, NashBartForConditionalGeneration


def auto_map(family: str) -> dict[str, str]:
    """The config's `auto_map` entry that points stock transformers at the copied modeling file."""
    module = FILES[family][0].removesuffix(".py")
    return {
        "AutoConfig": f"{module}.{FILES[family][1]}",
        "AutoModelForSeq2SeqLM": f"{module}.{FILES[family][2]}",
    }
