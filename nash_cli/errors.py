"""The one exception type that means "the user asked for something we cannot do"."""


class NashError(Exception):
    """A user mistake: bad path, wrong model type, impossible option, malformed data.

    The message is a single line that names the problem and the fix. The CLI prints it and
    exits with code 2, without a traceback; library callers can catch it like any exception.
    """

    exit_code = 2
