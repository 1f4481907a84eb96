"""Self-describing artifact folders: every file's sha256 is in manifest.json and checked before use."""

from __future__ import annotations

import json
from pathlib import Path

from recsys.errors import ArtifactError
from recsys.io import sha256_file


def verify_files(folder: Path, *, kind: str) -> dict:
    """Return the manifest of `folder` after checking that every listed file is present and unmodified."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{folder}: no manifest.json; not a {kind} folder")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{folder}: is a '{manifest.get('kind')}' folder, expected '{kind}'")
    check_files(folder, manifest.get("files", {}), listed_in="the manifest", consequence="re-export or restore it")
    return manifest


def check_files(folder: Path, files: dict, *, listed_in: str, consequence: str) -> None:
    """Every file of `files` ({name: {sha256, bytes}}) exists under `folder` with that size and hash."""
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {listed_in} but missing; {consequence}")
        if path.stat().st_size != meta["bytes"] or sha256_file(path) != meta["sha256"]:
            raise ArtifactError(f"{path}: modified or truncated (sha256 does not match {listed_in}); {consequence}")
