"""The sweep's own error."""


class SweepError(ValueError):
    """A bad sweep input; the message names the file, folder or parameter."""

