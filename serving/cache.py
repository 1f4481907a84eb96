"""Item-vector cache: a nightly run encodes only items whose text is new or changed.

Entries are keyed by (the export's item encoder, the hash of the item's text), so a new export or an
edited title never reuses a stale vector. The cache of one encoder is a single Parquet file replaced
atomically: after a crash it is the old file or the new one, never half of either. A file that cannot
be read (or has the wrong shape) is rebuilt from scratch with a warning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.contracts.files import atomic_dir, atomic_path
from recsys.contracts.layout import ITEM_ENCODER, TOKENIZER_FILE, graph_file

TEXT_HASH = "text_hash"
VECTOR = "vector"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class CacheStats:
    hits: int = 0
    encoded: int = 0
    dropped: int = 0  # entries of items no longer in the catalog (or changed text)
    rebuilt: bool = False
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"hits": self.hits, "encoded": self.encoded, "dropped": self.dropped, "rebuilt": self.rebuilt}


class ItemVectorCache:
    """`vectors(model, texts)` returns (N, D) vectors, encoding only texts missing from the cache."""

    def __init__(self, folder: str | Path, encoder_key: str):
        self.folder = Path(folder)
        self.key = encoder_key
        self.path = self.folder / f"item-vectors-{encoder_key}.parquet"

    def _load(self, dim: int, stats: CacheStats) -> dict[str, np.ndarray]:
        if not self.path.exists():
            return {}
        try:
            frame = pl.read_parquet(self.path)
            column = frame[VECTOR]
            if not frame.height:
                vectors = np.zeros((0, dim), np.float32)
            elif isinstance(column.dtype, pl.Array):  # as written: one (n, D) copy, no Python lists (0.2 s at 20k items)
                vectors = np.ascontiguousarray(column.to_numpy(), dtype=np.float32)
            else:
                vectors = np.asarray(column.to_list(), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != dim or not np.isfinite(vectors).all():
                raise ValueError(f"vectors of shape {vectors.shape}, expected (n, {dim})")
            return dict(zip(frame[TEXT_HASH].to_list(), vectors))
        except Exception as exc:
            stats.rebuilt = True
            stats.warnings.append(f"item-vector cache {self.path} is unreadable ({str(exc).splitlines()[0][:120]}); rebuilding it")
            return {}

    def vectors(self, model, texts: list[str], progress=None) -> tuple[np.ndarray, CacheStats]:
        stats = CacheStats()
        hashes = [text_hash(t) for t in texts]
        cached = self._load(model.dim, stats)
        before = set(cached)
        missing = sorted({h: i for i, h in enumerate(hashes) if h not in before}.items())
        if missing:
            fresh = model.encode_items([texts[i] for _, i in missing], progress=progress)
            cached.update({h: v for (h, _), v in zip(missing, fresh)})
        stats.encoded = len(missing)
        stats.hits = sum(h in before for h in hashes)
        out = np.stack([cached[h] for h in hashes]) if texts else np.zeros((0, model.dim), np.float32)
        keep = sorted(set(hashes))
        stats.dropped = len(cached) - len(keep)
        if missing or stats.dropped or stats.rebuilt:
            frame = pl.DataFrame(
                {
                    TEXT_HASH: keep,
                    VECTOR: pl.Series(VECTOR, np.stack([cached[h] for h in keep]) if keep else np.zeros((0, model.dim), np.float32)),
                }
            )
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as tmp:
                frame.write_parquet(tmp)
        return out.astype(np.float32, copy=False), stats


def encoder_key(manifest: dict, max_length: int) -> str:
    """What an item's vector depends on besides its text: the encoder graph, tokenizer and truncation."""
    files = manifest["files"]
    return f"{files[graph_file(ITEM_ENCODER)]['sha256'][:16]}-{files[TOKENIZER_FILE]['sha256'][:8]}-L{max_length}"


def item_keys(item_ids: list[str], texts: list[str]) -> list[str]:
    """What the approximate index keeps an entry by: the item and its text (the encoder is in the file name)."""
    return [text_hash(f"{item_id}\n{text}") for item_id, text in zip(item_ids, texts)]


class AnnIndexCache:
    """The approximate index over one encoder's catalog, kept beside the item-vector cache and keyed the
    same way (docs/ARCHITECTURE.md, "Retrieval"): a run loads it, removes the entries of items that are
    gone or whose text changed, adds the new ones (`AnnIndex.updated`), and builds it anew only where an
    update cannot be exact or has drifted too far from the catalog its lists were trained on. One folder
    (faiss' own index file, read and written by faiss: 1.3 s for 1M items against 5.7 through its
    serialised bytes; and the slots' keys), replaced atomically; an unreadable one is rebuilt with a
    warning. An entry's vector is the one the item-vector cache holds for that text under that encoder,
    so a kept entry equals a fresh encoding."""

    def __init__(self, folder: str | Path, encoder_key: str):
        self.folder = Path(folder)
        self.path = self.folder / f"ann-{encoder_key}"

    def _load(self, dim: int, warnings: list[str]):
        import faiss

        from serving.ann import AnnIndex

        if not self.path.exists():
            return None
        try:
            with np.load(self.path / "slots.npz", allow_pickle=False) as stored:
                index = faiss.read_index(str(self.path / "index.faiss"))
                mean = stored["mean"].astype(np.float32)
                if index.d != dim + 1 or mean.shape != (dim,):
                    raise ValueError(f"an index of width {index.d} for vectors of width {dim}")
                if len(stored["keys"]) != len(stored["item_of_slot"]):
                    raise ValueError(f"{len(stored['keys'])} keys for {len(stored['item_of_slot'])} slots")
                ann = AnnIndex(
                    index,
                    stored["item_of_slot"].astype(np.int64),
                    1,
                    mean,
                    float(stored["radius_sq"]),
                    int(stored["built"]),
                    int(stored["drift"]),
                )
                return ann, stored["keys"].tolist()
        except Exception as exc:
            warnings.append(f"approximate index {self.path} is unreadable ({str(exc).splitlines()[0][:120]}); rebuilding it")
            return None

    def index(self, vectors: np.ndarray, keys: list[str], *, nprobe: int) -> tuple[object, dict]:
        """(AnnIndex over `vectors` (row i = item i, whose key is keys[i]), {"how": loaded|updated|built,
        "added", "removed", "warnings"})."""
        from serving.ann import AnnIndex

        stats: dict = {"how": "built", "added": len(keys), "removed": 0, "warnings": []}
        loaded = self._load(vectors.shape[1], stats["warnings"])
        ann = None
        if loaded is not None:
            old, slot_keys = loaded
            lookup = {key: slot for slot, key in enumerate(slot_keys) if old.item_of_slot[slot] >= 0}
            slot_of_item = np.array([lookup.pop(key, -1) for key in keys], dtype=np.int64)  # a key held twice: one slot
            added, removed = int((slot_of_item < 0).sum()), len(lookup)
            unchanged = not added and not removed and np.array_equal(old.item_of_slot[slot_of_item], np.arange(len(keys)))
            ann = old if unchanged else old.updated(vectors, slot_of_item)
            if ann is not None:
                stats.update(how="loaded" if unchanged else "updated", added=added, removed=removed)
        if ann is None:
            ann = AnnIndex.build(vectors, nprobe=nprobe)
        ann.nprobe = min(nprobe, ann.index.nlist)
        if stats["how"] != "loaded":
            import faiss

            slot_keys = np.full(len(ann.item_of_slot), "", dtype=f"<U{max((len(k) for k in keys), default=1)}")
            alive = ann.item_of_slot >= 0
            slot_keys[alive] = np.asarray(keys)[ann.item_of_slot[alive]]
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_dir(self.path) as tmp:
                faiss.write_index(ann.index, str(tmp / "index.faiss"))
                np.savez(
                    tmp / "slots.npz",
                    item_of_slot=ann.item_of_slot,
                    keys=slot_keys,
                    mean=ann.mean,
                    radius_sq=np.float64(ann.radius_sq),
                    built=np.int64(ann.built),
                    drift=np.int64(ann.drift),
                )
        return ann, stats
