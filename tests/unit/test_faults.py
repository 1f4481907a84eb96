"""The fault suite: the CLI run as a user's scheduler runs it, as real processes.

For every case: the exit code, one `recsys:` line and no traceback, the sha256 of every input before and
after, and what is left at and beside the destination. Full and read-only disks are real small tmpfs
mounts (skipped, with the reason, where this machine does not allow mounting); signals go to real
processes; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from _processes import ROOT, CliProcess

TIMEOUT_S = 180


def cli(*args, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("recsys:")]


def assert_one_line_failure(result, code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = errors(result)
    assert len(lines) == 1, result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def digest(*paths: Path) -> dict[str, str]:
    out = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out.update({str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files})
    return out


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, readonly: bool = False):
    """A small file system of its own at `path` (root only); skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({made.stderr.strip() or 'mount failed'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def shop(tmp_path, tiny_shop) -> Path:
    """A private copy of the tiny shop (with a single-file events log too), so no case can touch the shared one."""
    folder = tmp_path / "shop"
    shutil.copytree(tiny_shop, folder)
    pl.read_parquet(folder / "events").write_parquet(folder / "events.parquet")
    return folder


def score_args(model: Path, shop: Path, out) -> list:
    return [
        "score",
        "--model",
        model,
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--out",
        out,
        "--device",
        "cpu",
        "--no-cache",
    ]


# --- outputs never eat inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("score --out is the items file", ["--out", "is the --items input"]),
        ("score --out is the events file", ["--out", "is the --events input"]),
        ("score --out inside the events folder", ["lies inside the --events folder"]),
        ("score --out is a folder", ["is a folder"]),
        ("score --out under a regular file", ["is not a folder"]),
        ("score --out is a device", ["not a regular file"]),
        ("train --out is the events folder", ["--out", "is the --events input"]),
        ("train --out contains the items", ["contains the --items input"]),
        ("export --out is the model", ["--out", "is the --model input"]),
        ("evaluate --out is the events folder", ["is the --events input"]),
    ],
)
def test_an_output_that_would_eat_an_input_is_refused(tmp_path, shop, exported_model, trained_model, tiny_config_file, case, words):
    inputs = [shop, exported_model, trained_model]
    before = digest(*inputs)
    beside, in_events = listing(shop), listing(shop / "events")
    events_file = shop / "events.parquet"
    train = ["train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file]
    (tmp_path / "plain-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    command = {
        "score --out is the items file": score_args(exported_model, shop, shop / "items.parquet"),
        "score --out is the events file": [
            *score_args(exported_model, shop, events_file)[:5],
            "--events",
            events_file,
            "--out",
            events_file,
            "--device",
            "cpu",
        ],
        "score --out inside the events folder": score_args(exported_model, shop, shop / "events" / "recs.parquet"),
        "score --out is a folder": score_args(exported_model, shop, tmp_path / "a-folder"),
        "score --out under a regular file": score_args(exported_model, shop, tmp_path / "plain-file" / "recs.parquet"),
        "score --out is a device": score_args(exported_model, shop, "/dev/full"),
        "train --out is the events folder": [*train, "--out", shop / "events"],
        "train --out contains the items": [*train, "--out", shop],
        "export --out is the model": ["export", "--model", trained_model, "--out", trained_model],
        "evaluate --out is the events folder": [
            "evaluate",
            "--items",
            shop / "items.parquet",
            "--events",
            shop / "events",
            "--out",
            shop / "events",
            "--config",
            tiny_config_file,
        ],
    }[case]
    result = cli(*command, timeout=60)
    assert_one_line_failure(result, 2, *words)
    assert digest(*inputs) == before, "every input is byte-identical"
    assert listing(shop) == beside and listing(shop / "events") == in_events, "nothing added to the inputs' folders"
    assert listing(tmp_path / "a-folder") == [] and not list(tmp_path.glob(".*")), "nothing beside the destination"
    assert Path("/dev/full").is_char_device()


def test_retrain_in_place_replaces_the_model_atomically_by_contract(tmp_path, shop, trained_model, tiny_config_file):
    """--out equal to --model is the documented form of retrain: allowed, and the model is replaced only if promoted."""
    model = tmp_path / "model"
    shutil.copytree(trained_model, model)
    gate = [
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--config",
        tiny_config_file,
        "--test-days",
        "2",
        "--device",
        "cpu",
    ]
    result = cli("retrain", "--model", model, "--out", model, *gate)
    assert result.returncode in (0, 10), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert (model / "manifest.json").is_file() and listing(tmp_path) == ["model", "shop"]


# --- write failures -------------------------------------------------------------------------------------------


def test_a_read_only_destination_is_refused_before_any_work(tmp_path, shop, exported_model):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as ro:
        result = cli(*score_args(exported_model, shop, ro / "recs.parquet"), timeout=60)
        assert_one_line_failure(result, 2, "cannot write in", "Read-only file system")
        assert listing(ro) == []


@pytest.mark.parametrize("job", ["score", "train"])
def test_a_full_disk_is_one_line_and_leaves_the_old_output(tmp_path, shop, exported_model, tiny_config_file, job):
    before = digest(shop, exported_model)
    with tmpfs(tmp_path / "small", "1m") as small:
        out = small / ("recs.parquet" if job == "score" else "model")
        if job == "score":
            out.write_bytes(b"yesterday's recommendations")
            command = score_args(exported_model, shop, out)
        else:
            out.mkdir()
            (out / "manifest.json").write_text('{"kind": "yesterday"}')
            command = ["train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file, "--out", out]
        previous = digest(out)
        # a full disk whatever the job writes: all but 8 KiB taken (the recommendations alone need more)
        stat = os.statvfs(small)
        (small / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8192))
        result = cli(*command)
        assert_one_line_failure(result, 5, "cannot write", "No space left on device")
        assert digest(out) == previous, "the destination holds what it held before"
        assert listing(small) == sorted([out.name, "filler"]), "no staging entry and no parts left beside it"
    assert digest(shop, exported_model) == before


# --- devices --------------------------------------------------------------------------------------------------


def test_asking_for_cuda_without_a_usable_gpu_fails(tmp_path, shop, exported_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers() and Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU: asking for CUDA works here")
    result = cli(*score_args(exported_model, shop, tmp_path / "recs.parquet")[:-3], "--device", "cuda", "--no-cache", timeout=60)
    assert_one_line_failure(result, 6, "--device cuda")
    assert listing(tmp_path) == ["shop"]
    auto = cli(*score_args(exported_model, shop, tmp_path / "recs.parquet")[:-3], "--device", "auto", "--no-cache", timeout=60)
    assert auto.returncode == 0 and "providers in use: CPUExecutionProvider" in auto.stderr


# --- signals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_train_removes_everything_it_made(tmp_path, shop, tiny_config_file, sig, code):
    out = tmp_path / "model"
    job = CliProcess("train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file, "--out", out)
    job.wait_for_line("training data:")
    job.process.send_signal(sig)
    got, stderr = job.finish()
    assert got == code and "Traceback" not in stderr and f"stopped by {sig.name}" in stderr, stderr[-2000:]
    assert listing(tmp_path) == ["shop"], "no model, no temporary folder beside it"
    again = cli("train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]


def test_sigterm_during_score_leaves_nothing_beside_the_output(tmp_path, shop, exported_model):
    out = tmp_path / "recs.parquet"
    job = CliProcess(*score_args(exported_model, shop, out)[:-1], "--no-cache", "--chunk-users", "1")
    parts = tmp_path / ".recs.parquet.parts"
    job.wait_until(lambda: len(list(parts.glob("part-*.parquet"))) >= 3, "three chunks on disk")  # mid-run
    job.process.send_signal(signal.SIGTERM)
    got, stderr = job.finish()
    assert got == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert listing(tmp_path) == ["shop"], "no parts, no temporary file, no output"


def test_sigterm_during_retrain_leaves_the_registry_as_it_was(tmp_path, shop, trained_model, tiny_config_file):
    registry = tmp_path / "registry"
    gate = [
        "--items",
        shop / "items.parquet",
        "--events",
        shop / "events",
        "--config",
        tiny_config_file,
        "--test-days",
        "2",
        "--device",
        "cpu",
    ]
    first = cli("retrain", "--registry", registry, "--model", trained_model, *gate)
    assert first.returncode in (0, 10), first.stderr[-2000:]
    state = (registry / "registry.json").read_bytes()
    versions = listing(registry / "versions")
    job = CliProcess("retrain", "--registry", registry, *gate)
    job.wait_for_line("challenger: training on events before")
    job.process.send_signal(signal.SIGTERM)
    got, stderr = job.finish()
    assert got == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert (registry / "registry.json").read_bytes() == state and listing(registry / "versions") == versions, "no .staging-* left"


def test_what_a_killed_run_left_is_swept_by_the_next_run(tmp_path, shop, tiny_config_file):
    """SIGKILL cannot be caught: the staging folders it leaves carry the dead pid, and the next run of the job
    removes them (and never an entry of a live process)."""
    out = tmp_path / "model"
    job = CliProcess("train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file, "--out", out)
    job.wait_for_line("training data:")
    job.process.kill()
    job.finish()
    dead = job.process.pid
    (tmp_path / f".model.{dead}-abcd.tmp").mkdir()  # what it would have left had it been killed while saving
    (tmp_path / f".model.{dead}-abcd.tmp" / "text_model.safetensors").write_bytes(b"half")
    live = tmp_path / f".model.{os.getpid()}-live.tmp"
    live.mkdir()
    again = cli("train", "--items", shop / "items.parquet", "--events", shop / "events", "--config", tiny_config_file, "--out", out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(listing(tmp_path)) == sorted([".model." + live.name.split(".model.")[1], "model", "shop"])


# --- the README's nightly recipe, as written ------------------------------------------------------------------


def readme_nightly_recipe() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("A nightly job, from the first night on:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "recsys retrain" in block and "recsys score" in block
    return block


def test_the_readme_nightly_recipe_works_from_an_empty_registry(tmp_path, tiny_shop, tiny_config_file):
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    shutil.copy(tiny_shop / "items.parquet", work / "items.parquet")
    days = sorted((tiny_shop / "events").iterdir())
    shim = tmp_path / "bin" / "recsys"  # the CLI as installed, with the tiny test config for the training commands
    shim.parent.mkdir()
    shim.write_text(
        "#!/usr/bin/env bash\n"
        f'case "$1" in train|retrain) exec {sys.executable} -m recsys.cli "$@" --config {tiny_config_file} --device cpu ;; '
        f'*) exec {sys.executable} -m recsys.cli "$@" --device cpu ;; esac\n'
    )
    shim.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim.parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RECSYS_CACHE_DIR": str(tmp_path / "cache"),
    }
    script = "set -u\n" + readme_nightly_recipe() + "\necho RECIPE-OK\n"
    for night, kept in (("first", days[:-2]), ("second", days)):
        for day in kept:
            shutil.copy(day, work / "logs" / day.name)
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert result.returncode == 0 and "RECIPE-OK" in result.stdout, (night, result.stdout[-1000:], result.stderr[-3000:])
        assert "Traceback" not in result.stderr
        assert len(list((work / "recs").glob("*.parquet"))) == 1
    registry = work / "models"
    from recsys.registry import Registry

    reg = Registry(registry)
    assert reg.champion is not None and len(reg.version_names()) == 2, reg.list()


def test_sigterm_during_export_leaves_nothing_beside_it(tmp_path, trained_model):
    out = tmp_path / "export"
    job = CliProcess("export", "--model", trained_model, "--out", out)
    job.wait_until(lambda: any(p.is_dir() for p in tmp_path.glob(".export.*.tmp")), "the export's staging folder")
    job.process.send_signal(signal.SIGTERM)
    got, stderr = job.finish()
    assert got == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert listing(tmp_path) == [], "no export, no staging folder"


def test_a_stop_signal_that_lands_in_a_finaliser_prints_no_traceback_and_still_stops(tmp_path):
    """SIGTERM arriving while Python runs a `__del__` (seen: the `regex` package's, during export): the
    handler's exception cannot leave a finaliser, and Python printed it as "Exception ignored … Traceback"
    before the job stopped at its next rename. The job's unraisable hook keeps that quiet; the stop itself
    still happens there (exit 143, the destination untouched). In a process of its own: pytest replaces
    the unraisable hook inside tests."""
    target = tmp_path / "out.txt"
    script = f"""
import os, signal
import typer
from recsys.cli import guarded
from recsys.contracts.files import atomic_path

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100_000):  # the handler runs at a bytecode boundary in here, not after the return
            pass

@guarded
def job():
    Finalised()  # collected at once: its __del__ takes the signal
    with atomic_path({str(target)!r}) as tmp:
        tmp.write_text("new")

try:
    job()
except typer.Exit as stopped:  # what the CLI app turns into the exit status
    raise SystemExit(stopped.exit_code)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 143 and "stopped by SIGTERM" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_swallowed_stop_signal_still_keeps_every_destination_as_it_was(tmp_path):
    """Python prints a signal handler's exception as "ignored" when the signal lands in a weakref callback
    (seen: an import's module-lock callback during retrain), and the job runs on; the signal is remembered
    and the next rename into a destination raises it instead."""
    from recsys.contracts.errors import Interrupted, clear_signals, note_signal
    from recsys.contracts.files import atomic_dir, atomic_path

    target, folder = tmp_path / "out.txt", tmp_path / "model"
    target.write_text("old")
    folder.mkdir()
    (folder / "f").write_text("old")
    note_signal(signal.SIGTERM)
    try:
        with pytest.raises(Interrupted, match="stopped by SIGTERM"), atomic_path(target) as tmp:
            tmp.write_text("new")
        with pytest.raises(Interrupted) as stopped, atomic_dir(folder) as tmp:
            (tmp / "f").write_text("new")
        assert stopped.value.exit_code == 143
    finally:
        clear_signals()
    assert target.read_text() == "old" and (folder / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"], "no temporary entries left"
    with atomic_path(target) as tmp:  # cleared: writes go through again
        tmp.write_text("new")
    assert target.read_text() == "new"
