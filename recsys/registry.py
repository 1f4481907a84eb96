"""A model registry on a plain folder: immutable versions, one champion, an append-only history.

```
REGISTRY/
  registry.json              champion, lineage (champions in order), history of every action
  versions/v0001/
    version.json             what this version is: hashes, data window, metrics, gate, config, code
    model/                   MODEL_DIR (training side, warm starts)
    export/                  EXPORT_DIR (what `recsys score` runs)
  versions/.staging-*/       a version being built; renamed to versions/vNNNN when complete
```

A version folder is written once (built in a staging folder, renamed into place) and never changed; the
mutable state is registry.json alone, rewritten atomically under a file lock. Every artifact is checked
against its sha256 before use. Torch-free: scoring resolves the champion through this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import re
import subprocess
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from recsys import __version__
from recsys.contracts.config import load_config
from recsys.contracts.errors import ArtifactError, ChampionChanged, RecsysError, raise_if_interrupted
from recsys.contracts.files import MANIFEST, check_files, file_entry, read_json_object, sha256_file, staging_dir, verify_files, write_json
from recsys.contracts.layout import CONFIG_FILE, EXPORT_KIND, MODEL_KIND, VERSION_KIND
from recsys.contracts.layout import EXPORT_SUBDIR as EXPORT
from recsys.contracts.layout import MODEL_SUBDIR as MODEL

REGISTRY_FILE = "registry.json"
VERSION_FILE = "version.json"
VERSIONS_DIR = "versions"
LOCK_FILE = ".lock"
_VERSION_NAME = re.compile(r"^v(\d{4,})$")
KEEP = object()  # `register(promote_over=KEEP)`: register only, whoever the champion is
_PACKAGES = ("polars", "numpy", "lightgbm", "onnxruntime", "onnxruntime-gpu", "tokenizers", "torch", "transformers")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """recsys version, git commit of the source tree (when it is a checkout) and versions of the key packages."""
    source = Path(__file__).resolve().parent.parent
    commit, dirty = None, None
    try:
        commit = (
            subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
            or None
        )
        if commit:
            status = subprocess.run(
                ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
            )
            dirty = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    packages = {}
    for name in _PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {"recsys": __version__, "git_commit": commit, "git_dirty": dirty, "packages": packages}


class Registry:
    """A registry folder. `Registry(path)` opens an existing one; `Registry.create(path)` makes it if needed."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / REGISTRY_FILE).is_file():
            raise ArtifactError(
                f"{self.root}: not a model registry (no {REGISTRY_FILE}); create one with `recsys train --registry {self.root}`"
            )

    @classmethod
    def create(cls, root: str | Path) -> Registry:
        root = Path(root)
        (root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        with _locked(root):
            if not (root / REGISTRY_FILE).is_file():
                write_json(
                    root / REGISTRY_FILE, {"kind": "recsys-registry", "format_version": 1, "champion": None, "lineage": [], "history": []}
                )
        return cls(root)

    @staticmethod
    def is_registry(path: str | Path) -> bool:
        return (Path(path) / REGISTRY_FILE).is_file()

    # --- reading -------------------------------------------------------------------------------------------

    def state(self) -> dict:
        state = read_json_object(self.root / REGISTRY_FILE, "the registry index is damaged; restore it from a backup")
        if state.get("kind") != "recsys-registry":
            raise ArtifactError(f"{self.root / REGISTRY_FILE}: is a '{state.get('kind')}' file, expected 'recsys-registry'")
        return state

    @property
    def champion(self) -> str | None:
        return self.state().get("champion")

    def version_dir(self, version: str) -> Path:
        folder = self.root / VERSIONS_DIR / version
        if not _VERSION_NAME.match(version) or not (folder / VERSION_FILE).is_file():
            known = ", ".join(self.version_names()[-5:]) or "none"
            raise RecsysError(f"{self.root}: no version '{version}' (latest: {known}); see `recsys models list --registry {self.root}`")
        return folder

    def model_dir(self, version: str) -> Path:
        return self.version_dir(version) / MODEL

    def export_dir(self, version: str) -> Path:
        return self.version_dir(version) / EXPORT

    def version_names(self) -> list[str]:
        folder = self.root / VERSIONS_DIR
        names = [p.name for p in folder.iterdir() if p.is_dir() and _VERSION_NAME.match(p.name)] if folder.is_dir() else []
        return sorted(names, key=lambda name: int(name[1:]))

    def manifest(self, version: str) -> dict:
        return read_json_object(self.version_dir(version) / VERSION_FILE, "the version folder is damaged")

    def verify(self, version: str) -> dict:
        """The version's manifest after checking every file of its model and export against the recorded sha256."""
        folder = self.version_dir(version)
        manifest = self.manifest(version)
        check_files(folder, manifest.get("files", {}), listed_in=VERSION_FILE, consequence=f"version {version} cannot be used")
        model = verify_files(folder / MODEL, kind=MODEL_KIND)
        export = verify_files(folder / EXPORT, kind=EXPORT_KIND)
        if model["model_version"] != export["model_version"] or model["model_version"] != manifest.get("model_version"):
            raise ArtifactError(f"{folder}: model, export and {VERSION_FILE} name different models; version {version} cannot be used")
        return manifest

    def status(self, version: str, state: dict | None = None) -> str:
        state = state or self.state()
        if version == state.get("champion"):
            return "champion"
        actions = [entry for entry in state.get("history", []) if entry.get("version") == version]
        if any(entry["action"] == "rollback" for entry in actions) and version not in state.get("lineage", []):
            return "rolled back"
        if version in state.get("lineage", []):
            return "previous champion"
        if any(entry["action"] == "reject" for entry in actions):
            return "rejected"
        return "candidate"

    def list(self) -> list[dict]:
        """One summary row per version, oldest first."""
        state = self.state()
        rows = []
        for version in self.version_names():
            manifest = self.manifest(version)
            gate = manifest.get("gate") or {}
            rows.append(
                {
                    "version": version,
                    "status": self.status(version, state),
                    "model_version": manifest.get("model_version"),
                    "created_at": manifest.get("created_at"),
                    "created_by": manifest.get("created_by"),
                    "data_until": (manifest.get("data_window") or {}).get("ranker_until"),
                    "precision": manifest.get("precision"),
                    "ranker_valid_ndcg@10": (manifest.get("metrics") or {}).get("ranker_valid_ndcg@10"),
                    "gate_ndcg@10": gate.get("challenger"),
                    "gate_champion_ndcg@10": gate.get("champion"),
                }
            )
        return rows

    # --- writing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self) -> Iterator[Path]:
        """A staging folder inside the registry for a version being built; removed unless registered."""
        with staging_dir(self.root / VERSIONS_DIR, prefix=".staging-", suffix="") as staging:
            yield staging

    def register(
        self,
        staging: Path,
        *,
        created_by: str,
        parent: str | None = None,
        gate: dict | None = None,
        promote_over: object = KEEP,
        required: bool = True,
        reason: str = "manual",
    ) -> str:
        """Describe the model/ and export/ in `staging` in version.json and rename it to the next version number.

        With `promote_over` (a version, or None for "no champion yet"), the new version also becomes the
        champion in the same locked step, and only if the champion is still `promote_over`: a gate is a
        compare-and-swap on the champion it compared with. When the champion moved meanwhile, `required`
        raises `ChampionChanged` with nothing registered; otherwise the version stays a candidate.
        """
        model = verify_files(staging / MODEL, kind=MODEL_KIND)
        export = verify_files(staging / EXPORT, kind=EXPORT_KIND)
        if model["model_version"] != export["model_version"]:
            raise ArtifactError(f"{staging}: the export is of model {export['model_version']}, not {model['model_version']}")
        manifest = {
            "kind": VERSION_KIND,
            "format_version": 1,
            "version": None,  # set below, under the lock
            "model_version": model["model_version"],
            "created_at": _now(),
            "created_by": created_by,
            "parent": parent,
            "precision": export["precision"],
            "code_version": code_version(),
            "data_window": model.get("data_window"),
            "inputs": model.get("inputs"),
            "dropped_rows": model.get("dropped_rows", {}),
            "repaired_rows": model.get("repaired_rows", {}),
            "metrics": model.get("metrics", {}),
            "parity": export.get("parity"),
            "gate": gate,
            "config": load_config(staging / MODEL / CONFIG_FILE).to_dict(),
            "files": {f"{part}/{MANIFEST}": file_entry(staging / part / MANIFEST) for part in (MODEL, EXPORT)},
        }
        with _locked(self.root):
            champion = self.state().get("champion")
            swap = promote_over is not KEEP and champion == promote_over
            if promote_over is not KEEP and not swap and required:
                raise ChampionChanged(
                    f"{self.root}: the champion is now {champion or 'none'}, not {promote_over or 'none'} that this challenger "
                    f"was compared with; nothing was registered (run it again to compare with {champion or 'an empty registry'})"
                )
            names = self.version_names()
            version = f"v{(int(names[-1][1:]) + 1 if names else 1):04d}"
            manifest["version"] = version
            write_json(staging / VERSION_FILE, manifest)
            raise_if_interrupted()
            os.rename(staging, self.root / VERSIONS_DIR / version)  # a new name: never replaces a version
            self._append(action="register", version=version, details={"by": created_by, "model_version": manifest["model_version"]})
            if swap:
                self._promote_locked(version, reason=reason, gate=gate)
        return version

    def promote(self, version: str, *, reason: str = "manual") -> dict:
        """Make `version` the champion (after verifying its files); returns the history entry.

        Compare-and-swap like the gate: if the champion changes while the files are being verified (a
        retrain promoted its challenger), nothing changes and `ChampionChanged` is raised.
        """
        seen = self.champion
        self.verify(version)
        with _locked(self.root):
            if self.state().get("champion") != seen:
                raise ChampionChanged(
                    f"{self.root}: the champion changed from {seen} to {self.champion} while {version} was being verified; run the command again"
                )
            return self._promote_locked(version, reason=reason, gate=self.manifest(version).get("gate"))

    def _promote_locked(self, version: str, *, reason: str, gate: dict | None) -> dict:
        """Caller holds the lock. The history entry names the champion replaced and the comparison that
        `version` won (its gate), if it had one."""
        state = self.state()
        previous = state.get("champion")
        if previous == version:
            raise RecsysError(f"{self.root}: {version} is already the champion")
        state["champion"] = version
        state["lineage"] = [*state.get("lineage", []), version]
        details = {"previous": previous, "reason": reason, "gated_against": None, "comparison": None}
        if gate:
            details["gated_against"] = gate.get("champion_version")
            details["comparison"] = {
                key: gate.get(key) for key in ("metric", "challenger", "champion", "tolerance", "queries", "cutoff", "end")
            }
        return self._append(action="promote", version=version, details=details, state=state)

    def rollback(self, *, reason: str = "manual") -> dict:
        """Make the previous champion the champion again (after verifying its files); returns the history entry."""
        state = self.state()
        lineage = state.get("lineage", [])
        if len(lineage) < 2:
            raise RecsysError(f"{self.root}: no previous champion to roll back to (champions so far: {', '.join(lineage) or 'none'})")
        self.verify(lineage[-2])
        with _locked(self.root):
            state = self.state()
            if state.get("lineage", []) != lineage:
                raise RecsysError(f"{self.root}: the registry changed while rolling back; run the command again")
            current, target = lineage[-1], lineage[-2]
            state["champion"] = target
            state["lineage"] = lineage[:-1]
            entry = self._append(action="rollback", version=current, details={"to": target, "reason": reason}, state=state)
        return entry

    def record(self, action: str, version: str, **details: Any) -> dict:
        """Add an entry to the history (e.g. a challenger the gate rejected)."""
        with _locked(self.root):
            return self._append(action=action, version=version, details=details)

    def _append(self, *, action: str, version: str, details: dict, state: dict | None = None) -> dict:
        """Caller holds the lock."""
        state = state if state is not None else self.state()
        entry = {"at": _now(), "action": action, "version": version, **details}
        state["history"] = [*state.get("history", []), entry]
        write_json(self.root / REGISTRY_FILE, state)
        return entry


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the registry while its index is read, changed and written."""
    with open(root / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def resolve_export_dir(path: str | Path, log=lambda message: None) -> Path:
    """An EXPORT_DIR from what `recsys score --model` was given: an export, a registry (its champion) or a version folder."""
    path = Path(path)
    if Registry.is_registry(path):
        registry = Registry(path)
        champion = registry.champion
        if champion is None:
            raise ArtifactError(
                f"{path}: the registry has no champion yet; promote one with `recsys models promote VERSION --registry {path}`"
            )
        if not (path / VERSIONS_DIR / champion / VERSION_FILE).is_file():
            raise ArtifactError(
                f"{path / VERSIONS_DIR / champion}: the champion's folder is missing; restore it or promote another version"
            )
        _check_listed(registry.version_dir(champion), EXPORT)
        log(f"registry champion {champion}")
        return registry.export_dir(champion)
    if (path / VERSION_FILE).is_file():
        _check_listed(path, EXPORT)
        return path / EXPORT
    return path


def _check_listed(folder: Path, part: str) -> None:
    """The export's manifest is the one version.json recorded (the export's own files are checked on load)."""
    manifest = read_json_object(folder / VERSION_FILE, "the version folder is damaged")
    meta = manifest.get("files", {}).get(f"{part}/{MANIFEST}")
    path = folder / part / MANIFEST
    if meta is None or not path.is_file() or sha256_file(path) != meta["sha256"]:
        raise ArtifactError(f"{path}: missing or modified (sha256 does not match {folder / VERSION_FILE})")
