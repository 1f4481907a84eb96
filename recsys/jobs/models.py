"""`recsys models list|promote|rollback`: the registry's versions and its champion."""

from __future__ import annotations

from pathlib import Path

from recsys.registry import Registry


def list_versions(registry: str | Path) -> list[dict]:
    """Every version, oldest first, with its status, data window and metrics."""
    return Registry(registry).list()


def promote(version: str, registry: str | Path) -> dict:
    """Make `version` the champion (its files verified first); returns the history entry."""
    return Registry(registry).promote(version)


def rollback(registry: str | Path) -> dict:
    """Make the previous champion the champion again; returns the history entry."""
    return Registry(registry).rollback()
