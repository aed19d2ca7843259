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
