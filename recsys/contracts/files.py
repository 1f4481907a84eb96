"""Files every room writes and reads: atomic writes, staging folders, content hashes, hash-checked folders.

A crash never leaves a half-written file under a final name: files and folders are written beside their
destination (same file system) and renamed into place when complete. Staging entries carry the pid of
the process that made them, so the next run can remove what a killed process left (`sweep_leftovers`).
A write that fails in the file system (no space, permission, read-only, I/O error) becomes a
`WriteError` naming the destination and the OS's reason. Every artifact folder lists its
files as `{name: file_entry}` in `manifest.json`; `verify_files` checks them before anything is loaded.
See docs/ARCHITECTURE.md, "Artifacts".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from recsys.contracts.errors import ArtifactError, WriteError, raise_if_interrupted

MANIFEST = "manifest.json"
# what a failing write reports: the OS's error number, in Python's, Rust's (polars, safetensors) or C's words
_WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.EDQUOT, errno.EFBIG}
_ERRNO_IN_TEXT = re.compile(r"os error (\d+)|code: (\d+)|\[Errno (\d+)\]")


def write_error(exc: BaseException, destination: str | Path) -> WriteError | None:
    """`exc` as a WriteError for `destination` when it is the file system refusing a write, else None."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return WriteError(destination, os.strerror(exc.errno))
    if isinstance(exc, Exception):
        for match in _ERRNO_IN_TEXT.finditer(str(exc)):
            number = int(next(g for g in match.groups() if g))
            if number in _WRITE_ERRNOS:
                return WriteError(destination, os.strerror(number))
    return None


@contextlib.contextmanager
def writing(destination: str | Path) -> Iterator[None]:
    """Inside the block, a write the file system refuses surfaces as one WriteError for `destination`."""
    try:
        yield
    except Exception as exc:
        error = write_error(exc, destination)
        if error is None or error is exc:
            raise
        raise error from None


def _owned(prefix: str) -> str:
    """A staging name's prefix with this process's pid in it (see `sweep_leftovers`)."""
    return f"{prefix}{os.getpid()}-"


@contextlib.contextmanager
def staging_dir(parent: str | Path, prefix: str, suffix: str = ".tmp") -> Iterator[Path]:
    """A fresh folder inside `parent` (created if missing), removed when the block ends, whatever happens.

    What the block wants to keep it renames out of the folder (same file system) before the end.
    """
    parent = Path(parent)
    with writing(parent):
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_owned(prefix), suffix=suffix, dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_owned(f".{path.name}."), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with writing(path):
            yield tmp_path
            with open(tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
            raise_if_interrupted()
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    with staging_dir(path.parent, prefix=f".{path.name}.") as tmp, writing(path):
        yield tmp
        install_dir(tmp, path)


def install_dir(src: str | Path, path: str | Path) -> None:
    """Move the complete folder `src` (same file system) to `path`, replacing any folder there by renames."""
    src, path = Path(src), Path(path)
    raise_if_interrupted()
    if path.exists():
        # killed between the two renames, the old folder waits under this name: `sweep_leftovers` puts it back
        old = path.with_name(f"{_owned(f'.{path.name}.old-')}swap.tmp")
        os.replace(path, old)
        os.replace(src, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, path)


def copy_dir(src: str | Path, path: str | Path) -> None:
    """Copy folder `src` to `path` atomically: a copy beside `path`, renamed into place when complete."""
    with atomic_dir(path) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def write_json(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON object from an artifact file; ArtifactError (exit 3) saying `what` to do when it is missing or damaged."""
    path = Path(path)
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc}); {what}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: not a JSON object; {what}")
    return data


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: str | Path) -> dict[str, Any]:
    """How a manifest lists one file: its sha256 and size."""
    path = Path(path)
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def file_entries(folder: str | Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`{name: file_entry}` for files under `folder`, sorted by name."""
    folder = Path(folder)
    return {name: file_entry(folder / name) for name in sorted(names)}


def verify_files(folder: str | Path, *, kind: str) -> dict:
    """Return the manifest of `folder` after checking that every listed file is present and unmodified."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST}; not a {kind} folder")
    try:
        manifest = read_json(manifest_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{folder}: is a '{manifest.get('kind')}' folder, expected '{kind}'")
    check_files(folder, manifest.get("files", {}), listed_in="the manifest", consequence="re-export or restore it")
    return manifest


def check_files(folder: str | Path, files: dict, *, listed_in: str, consequence: str) -> None:
    """Every file of `files` ({name: file_entry}) exists under `folder` with that size and hash."""
    folder = Path(folder)
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {listed_in} but missing; {consequence}")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise ArtifactError(f"{path}: modified or truncated (sha256 does not match {listed_in}); {consequence}")


def describe_input(path: str | Path) -> dict[str, Any]:
    """Size and hash of an input file, or of every file in an input directory."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    size = 0
    for file in files:
        digest.update(file.name.encode())
        digest.update(sha256_file(file).encode())
        size += file.stat().st_size
    return {"path": str(path), "files": len(files), "bytes": size, "sha256": digest.hexdigest()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_leftovers(folder: str | Path, *, names: str | None = None) -> list[Path]:
    """Remove the staging entries in `folder` whose process no longer runs (SIGKILL, power loss), for the
    destination `names` only when given; a folder swap cut between its two renames is finished by putting
    the old folder back. Entries of live processes are never touched. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    lead = re.escape(f".{names}.") if names is not None else r"\..+?\."
    pattern = re.compile(rf"^(?:{lead}(?P<old>old-)?|\.staging-)(?:[a-z]+-)?(?P<pid>\d+)-.*(?:\.tmp)?$")
    removed = []
    for entry in sorted(folder.iterdir()):
        match = pattern.match(entry.name)
        if match is None or _alive(int(match["pid"])):
            continue
        if match["old"]:
            original = folder / entry.name[1:].split(".old-")[0]
            if not original.exists():
                os.replace(entry, original)  # the new folder never made it: the old one is the destination again
                continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
