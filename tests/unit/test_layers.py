"""The rooms of docs/ARCHITECTURE.md and the direction of imports between them, checked on the source.

Every import counts, at module level or inside a function, under `if TYPE_CHECKING:` or not: an import
hidden in a function is still an arrow. A module that belongs to no room fails too, so a new module has
to be placed before it can land.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recsys", "features", "serving", "export")

# room -> the module prefixes it holds (the longest matching prefix decides)
ROOMS: dict[str, tuple[str, ...]] = {
    "contracts": ("=recsys", "recsys.contracts"),  # "=": that module alone (`recsys` holds only __version__)
    "features": ("features",),
    "serving": ("serving",),
    "model": ("recsys.encoder", "recsys.model", "recsys.model_io"),
    "export": ("export",),
    "library": (
        "recsys.data",
        "recsys.generate",
        "recsys.movielens",
        "recsys.interactions",
        "recsys.pretrain",
        "recsys.train",
        "recsys.metrics",
        "recsys.evaluate",
        "recsys.report",
        "recsys.registry",
        "recsys.loo",
        "recsys.peers",
        "recsys.sequential",
    ),
    "jobs": ("recsys.jobs",),
    "cli": ("recsys.cli", "recsys.progress"),
}

# room -> the rooms it may import from (itself included where listed)
ALLOWED: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "features": {"contracts", "features"},
    "serving": {"contracts", "features", "serving"},
    "model": {"contracts", "serving", "model"},
    "export": {"contracts", "serving", "model", "export"},
    "library": {"contracts", "features", "serving", "model", "library"},
    "jobs": {"contracts", "features", "serving", "model", "export", "library", "jobs"},
    "cli": {"contracts", "jobs", "cli"},
}

# third-party stacks a room must never import (serving runs on machines without torch)
FORBIDDEN_THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "contracts": ("torch", "transformers", "safetensors", "onnx", "onnxruntime", "lightgbm", "typer", "rich"),
    "features": ("torch", "transformers", "safetensors", "onnx", "onnxruntime", "lightgbm", "numpy_typing"),
    "serving": ("torch", "transformers", "safetensors", "onnx", "typer"),
}

# optional stacks (extras): only these modules import them, so the core install never needs them
OPTIONAL_STACKS: dict[str, tuple[str, ...]] = {
    "fastapi": ("serving.http",),
    "pydantic": ("serving.http",),
    "uvicorn": ("recsys.jobs.serve",),
    "onnxmltools": ("export.triton",),
    "tritonclient": (),
    "ray": ("recsys.jobs.ray_engine",),
}


def room_of(module: str) -> str | None:
    best, room = -1, None
    for name, prefixes in ROOMS.items():
        for prefix in prefixes:
            exact = prefix.startswith("=")
            prefix = prefix.lstrip("=")
            if (module == prefix or (not exact and module.startswith(prefix + "."))) and len(prefix) > best:
                best, room = len(prefix), name
    return room


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from recsys import schema` imports the submodule recsys.schema
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every arrow against ALLOWED, every module without a room, every forbidden third-party import."""
    known = set(sources)
    problems = []
    for module, (source, is_package) in sorted(sources.items()):
        room = room_of(module)
        if room is None:
            problems.append(f"{module}: in no room of ROOMS (docs/ARCHITECTURE.md); declare where it belongs")
            continue
        for line, target in imported_modules(source, module, is_package):
            top = target.split(".")[0]
            if top in PACKAGES:
                if target not in known and target.rsplit(".", 1)[0] in known:
                    continue  # `from pkg.mod import name`: the name, not a module; pkg.mod is checked itself
                target_room = room_of(target)
                if target_room is not None and target_room not in ALLOWED[room]:
                    problems.append(f"{module}:{line} imports {target}: {room} → {target_room} is against the layers")
            elif top in FORBIDDEN_THIRD_PARTY.get(room, ()):
                problems.append(f"{module}:{line} imports {target}: the {room} room never imports {top}")
            elif top in OPTIONAL_STACKS and module not in OPTIONAL_STACKS[top]:
                problems.append(f"{module}:{line} imports {target}: {top} is an optional extra, imported only by {OPTIONAL_STACKS[top]}")
    return problems


def project_sources() -> dict[str, tuple[str, bool]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out[module_name(path)] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def test_every_import_follows_the_layers():
    problems = violations(project_sources())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("serving.new", "def f():\n    import recsys.data\n", "serving → library"),
        ("serving.new", "from recsys.contracts.files import atomic_path\nfrom recsys.jobs.score import score\n", "serving → jobs"),
        ("export.new", "if True:\n    from recsys.train import train_text_model\n", "export → library"),
        ("recsys.evaluate", "from export.onnx_export import export_model\n", "library → export"),
        ("features.new", "from serving.catalog import Catalog\n", "features → serving"),
        ("recsys.contracts.new", "from recsys import data\n", "contracts → library"),
        ("recsys.cli", "from recsys.registry import Registry\n", "cli → library"),
        ("serving.new", "import torch\n", "never imports torch"),
        ("serving.online", "import fastapi\n", "fastapi is an optional extra"),
        ("recsys.brand_new", "x = 1\n", "in no room"),
    ],
)
def test_a_forbidden_arrow_is_found(module, source, expected):
    sources = project_sources()
    sources[module] = (source, False)
    assert any(expected in p for p in violations(sources)), violations(sources)


def test_relative_imports_are_resolved():
    assert "serving.catalog" in [m for _, m in imported_modules("from .catalog import Catalog\n", "serving.score", False)]
    assert "recsys.contracts.files" in [m for _, m in imported_modules("from . import files\n", "recsys.contracts", True)]


def test_every_cli_command_calls_exactly_one_job():
    """A command parses options, calls one job function and prints: nothing of the work happens in the CLI."""
    tree = ast.parse((ROOT / "recsys" / "cli.py").read_text(encoding="utf-8"))
    commands = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command" for d in node.decorator_list)
    ]
    assert len(commands) >= 9
    for command in commands:
        jobs = set()
        for node in ast.walk(command):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recsys.jobs"):
                jobs |= {alias.asname or alias.name for alias in node.names if not alias.name.isupper()}
        calls = [
            node.func.id
            for node in ast.walk(command)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in jobs
        ]
        assert len(calls) == 1, f"recsys.cli.{command.name} calls {calls or 'no job'}; a command calls exactly one job function"
