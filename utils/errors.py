"""The project's own error types.

Every error a user can cause (bad config, bad data, wrong checkpoint) is raised as a subclass of
`SSPQError`; the command-line entry points print it as one line on stderr and exit non-zero
(`utils.cli.run_cli`). Anything else is a bug and keeps its traceback.
"""


class SSPQError(Exception):
    """Base class: a problem with the user's input that the user can fix."""


class ConfigError(SSPQError):
    """A YAML config or command-line override is wrong (unknown key, bad type, out of range)."""


class DataError(SSPQError):
    """A scene file is missing, unreadable, or holds a cube / gt that cannot be used."""


class CheckpointError(SSPQError):
    """A checkpoint is missing, truncated, from the wrong stage, or does not match the model or data."""


class OutputError(SSPQError):
    """An output cannot be written: the folder is unwritable or in use by another run, or the disk is full."""


class DivergenceError(SSPQError):
    """Training produced a non-finite loss or gradient; nothing was written for the failed step."""
