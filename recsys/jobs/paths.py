"""The one check of a job's paths, run before any work starts (docs/ARCHITECTURE.md, "Jobs own the files").

Every input and output is resolved (symlinks followed). An output may not be an input, lie inside an
input folder, or contain an input; a file output may not name a folder, nor a folder output a file; the
first existing folder above an output must be a folder this process can write to — found out by creating
the staging entry there and removing it, never by reading mode bits (the jobs may run as root, and a
read-only file system refuses root too). Missing parent folders are created, as they always were.
A refusal is one line naming the options and the paths, exit 2. When every check passes, what killed
runs left beside the outputs (and in a registry's versions/) is swept (`sweep_leftovers`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recsys.contracts.errors import UsageError
from recsys.contracts.files import sweep_leftovers


@dataclass(frozen=True)
class Output:
    option: str  # e.g. "--out"
    path: str | Path | None
    kind: str  # "file" or "dir"
    store: bool = False  # a folder that only ever gains entries (a registry): it may hold an input


def check_paths(inputs: dict[str, str | Path | None], outputs: list[Output], *, may_replace: tuple[tuple[str, str], ...] = ()) -> None:
    """Refuse (UsageError, exit 2) before anything is read or written; `may_replace` lists (output, input)
    option pairs where the output replacing that input atomically is the documented meaning."""
    given_inputs = {option: Path(path).resolve() for option, path in inputs.items() if path is not None}
    for out in outputs:
        if out.path is None:
            continue
        target = Path(out.path).resolve()
        for option, source in given_inputs.items():
            if (out.option, option) in may_replace and target == source:
                continue
            if target == source:
                raise UsageError(
                    f"{out.option} {out.path} is the {option} input ({source}); writing there would replace it: choose another destination"
                )
            if source.is_dir() and target.is_relative_to(source):
                raise UsageError(
                    f"{out.option} {out.path} lies inside the {option} folder {source}; the next run would read it as input: choose a destination outside it"
                )
            if source.is_relative_to(target) and not out.store:
                raise UsageError(
                    f"{out.option} {out.path} contains the {option} input {source}; writing there would replace it: choose another destination"
                )
        if out.kind == "file" and target.is_dir():
            raise UsageError(f"{out.option} {out.path} is a folder; give a file path")
        if out.kind == "file" and target.exists() and not target.is_file():
            raise UsageError(f"{out.option} {out.path} is not a regular file (a device or a socket); give a file path")
        if out.kind == "dir" and target.exists() and not target.is_dir():
            raise UsageError(f"{out.option} {out.path} is a file; give a folder path")
        _check_writable(out.option, out.path, target)
    for out in outputs:
        if out.path is not None:
            target = Path(out.path).resolve()
            sweep_leftovers(target.parent, names=target.name)
            if out.store:
                sweep_leftovers(target / "versions")


def _check_writable(option: str, given: str | Path, target: Path) -> None:
    """The nearest existing folder above `target` is a folder, and a staging entry can be created in it."""
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {given}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".probe.tmp", dir=parent)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = " (read-only file system)" if exc.errno == errno.EROFS else ""
        raise UsageError(f"{option} {given}: cannot write in {parent}: {reason}{hint}") from None
    os.close(fd)
    os.unlink(probe)
