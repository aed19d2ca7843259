"""The one exception type that means "the user asked for something we cannot do", and the one
wording of an option's lower bound (`require_at_least`)."""


class NashError(Exception):
    """A user mistake: bad path, wrong model type, impossible option, malformed data.

    The message is a single line that names the problem and the fix. The CLI prints it and
    exits with code 2, without a traceback; library callers can catch it like any exception.
    """

    exit_code = 2


def require_at_least(flag: str, value: int | None, minimum: int = 1, *, hint: str = "") -> None:
    """Raises NashError "`flag` must be at least `minimum`, got `value`" when `value` is below `minimum`.

    The one wording of the options' lower bounds, so every command and recipe says it alike.

    Args:
        flag: The option as the command line spells it, e.g. "--batch".
        value: The value given; None (an optional option left unset) passes.
        minimum: The smallest allowed value.
        hint: Put after the bound, e.g. " (1 = no rounding)".
    """
    if value is not None and value < minimum:
        raise NashError(f"{flag} must be at least {minimum}{hint}, got {value}")


#: The largest seed every random generator nash seeds accepts (numpy's bound; torch takes more).
SEED_MAX = 2**32 - 1


def require_finite(flag: str, value: float | None) -> None:
    """Raises NashError "`flag` must be a finite number, got `value`" for NaN or an infinity.

    `float("nan")` passes every comparison-based bound unnoticed (`nan < 0` is false), and an
    infinity passes a lower bound, so the options check this first.

    Args:
        flag: The option as the command line spells it, e.g. "--lr".
        value: The value given; None (an optional option left unset) and non-floats pass.
    """
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise NashError(f"{flag} must be a finite number, got {value}")


def require_finite_options(options: object) -> None:
    """`require_finite` on every float (or list of floats) field of an options dataclass, named by
    its flag (`weight_decay` -> `--weight-decay`): the one check each `Options.check()` makes."""
    import dataclasses

    for field in dataclasses.fields(options):  # type: ignore[arg-type]
        value = getattr(options, field.name)
        flag = "--" + field.name.replace("_", "-")
        for item in value if isinstance(value, (list, tuple)) else (value,):
            require_finite(flag, item)


def require_seed(flag: str, value: int | None) -> None:
    """Raises NashError unless `value` is a seed every generator accepts: 0 to `SEED_MAX`."""
    if value is not None and not 0 <= value <= SEED_MAX:
        raise NashError(f"{flag} must be between 0 and {SEED_MAX} (2**32 - 1), got {value}")
