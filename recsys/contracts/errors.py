"""The error family the CLI turns into one-line messages (everything else keeps its traceback)."""

from __future__ import annotations


class RecsysError(Exception):
    """Base of every error that is the user's input or environment, not a bug in recsys."""

    exit_code = 2


class SchemaError(RecsysError):
    """A data file does not meet the contract (docs/ARCHITECTURE.md, "Data"): names the file, the column, the problem."""

    def __init__(self, path: object, column: str | None, problem: str, examples: object = None):
        self.path, self.column, self.problem = str(path), column, problem
        where = f"{self.path}" + (f", column '{column}'" if column else "")
        text = f"{where}: {problem}"
        if examples:
            text += f" (e.g. {examples})"
        super().__init__(text)


class UsageError(RecsysError):
    """The command's options cannot work together or with the file system: an output that would replace
    an input, a destination that is a folder where a file is needed, a folder that cannot be written."""


class ConfigError(RecsysError):
    """A configuration file or option is wrong."""


class ArtifactError(RecsysError):
    """A model or export folder is missing, modified, truncated or from an incompatible version."""

    exit_code = 3


class ParityError(RecsysError):
    """The exported graph does not reproduce the PyTorch model within tolerance."""

    exit_code = 4


class ChallengerRejected(RecsysError):
    """`recsys retrain` kept the champion: the challenger scored worse than the gate allows. Not a failure of
    the job, so it has its own exit code that a scheduler can tell apart from bad input or a broken model."""

    exit_code = 10

    def __init__(self, message: str, gate: dict | None = None):
        super().__init__(message)
        self.gate = gate or {}


class ChampionChanged(RecsysError):
    """The registry's champion changed while a job held its comparison: the challenger was gated against
    a champion that is no longer the champion (another retrain, a `models promote` or `rollback` won the
    race). Nothing was registered or promoted; running the job again compares with the new champion."""

    exit_code = 11


class WriteError(RecsysError):
    """Writing an output failed in the file system: no space left, permission denied, a read-only file
    system, an I/O error. Names the destination and the OS's reason; the staging entry is removed and
    whatever was at the destination before is unchanged."""

    exit_code = 5

    def __init__(self, path: object, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: cannot write: {reason}; nothing was changed at the destination")


class DeviceError(RecsysError):
    """A device that was asked for explicitly (`--device cuda`) is not the one ONNX Runtime runs on."""

    exit_code = 6


_RECEIVED: list[int] = []  # signals a job's handler took (recsys.cli.guarded), the first one first


def note_signal(signum: int) -> None:
    """Remember that the job was asked to stop, for `raise_if_interrupted`."""
    _RECEIVED.append(signum)


def clear_signals() -> None:
    _RECEIVED.clear()


def raise_if_interrupted() -> None:
    """Raise `Interrupted` if a stop signal arrived. Called before every rename into a destination: Python
    runs a signal handler between any two bytecodes, and when that is inside a weakref callback or a
    `__del__` (an import's module-lock callback, for one) the handler's exception is printed as "ignored"
    and the job runs on; this check keeps such a job from changing the destination anyway."""
    if _RECEIVED:
        raise Interrupted(_RECEIVED[0])


class Interrupted(RecsysError):
    """The job was stopped by SIGTERM or SIGINT; its staging entries were removed on the way out.
    Exit code 128 + the signal's number, as a shell reports a process killed by it (143, 130)."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {signal.Signals(signum).name}; temporary files were removed and nothing was changed at the destination"
        )
