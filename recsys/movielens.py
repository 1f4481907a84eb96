"""MovieLens-100k (GroupLens `u.data` + `u.item`, or RecBole `ml-100k.inter` + `ml-100k.item`) in the contract form.

Each rating becomes a `click`; a rating of 4 or more also a `purchase` one second later (docs/ARCHITECTURE.md, "Offline resources"), so the
funnel click → purchase holds. Items get the title, a "Year: … Genres: …" description, the first genre as
category and domain "movies". The data is never committed: its licence forbids redistribution.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.errors import SchemaError
from recsys.contracts.files import atomic_path
from recsys.data import validate_events, validate_items

DOMAIN = "movies"
PURCHASE_MIN_RATING = 4.0
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# Column names as the GroupLens README gives them (the files have no header).
_UDATA_COLUMNS = ("user id", "item id", "rating", "timestamp")
_UITEM_COLUMNS = ("movie id", "movie title", "release date", "video release date", "IMDb URL", *GENRES)
_INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_COLUMNS = ("item_id", "movie_title", "release_year", "class")
_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


def _text(path: Path) -> str:
    if not path.is_file():
        raise SchemaError(path, None, "file is missing" if not path.exists() else "is not a file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # the GroupLens files are latin-1


def _rows(path: Path, sep: str, columns: tuple[str, ...], *, header: bool) -> tuple[tuple[str, ...], list[list[str]]]:
    """Split a delimited text file into string rows, checking that every line has every column."""
    lines = [line for line in _text(path).splitlines() if line.strip()]
    if header:
        if not lines:
            raise SchemaError(path, None, "file is empty (expected a header line)")
        names = tuple(field.split(":", 1)[0].strip() for field in lines[0].split(sep))
        for column in columns:
            if column not in names:
                raise SchemaError(path, column, f"required column is missing from the header (found: {', '.join(names)})")
        lines = lines[1:]
    else:
        names = columns
    if not lines:
        raise SchemaError(path, None, "file holds no rows")
    rows = []
    for number, line in enumerate(lines, start=2 if header else 1):
        fields = line.split(sep)
        if len(fields) < len(names):
            raise SchemaError(
                path, names[len(fields)], f"line {number} has {len(fields)} field(s), expected {len(names)} separated by {sep!r}"
            )
        if len(fields) > len(names):
            raise SchemaError(path, None, f"line {number} has {len(fields)} fields, expected {len(names)} separated by {sep!r}")
        rows.append(fields)
    return names, rows


def _column(path: Path, names: tuple[str, ...], rows: list[list[str]], column: str) -> pl.Series:
    j = names.index(column)
    return pl.Series(column, [row[j].strip() for row in rows], dtype=pl.String)


def _numeric(path: Path, values: pl.Series, dtype: pl.DataType, what: str) -> pl.Series:
    out = values.cast(pl.Float64, strict=False)
    bad = out.is_null() | out.is_nan()
    if dtype == pl.Int64:
        bad |= out.round() != out
    if bad.any():
        examples = ", ".join(repr(v) for v in values.filter(bad).head(3).to_list())
        raise SchemaError(path, values.name, f"{int(bad.sum())} value(s) are not {what}", examples)
    return out.cast(dtype)


def _events(path: Path, user: pl.Series, item: pl.Series, rating: pl.Series, timestamp: pl.Series) -> pl.DataFrame:
    user = _numeric(path, user, pl.Int64, "integer ids")
    item = _numeric(path, item, pl.Int64, "integer ids")
    rating = _numeric(path, rating, pl.Float64, "numbers")
    seconds = _numeric(path, timestamp, pl.Float64, "epoch seconds")
    ts = (seconds * 1_000_000).round().cast(pl.Int64).cast(pl.Datetime(S.TIME_UNIT))
    clicks = pl.DataFrame({S.USER_ID: user, S.ITEM_ID: item, S.EVENT: S.CLICK, S.TIMESTAMP: ts, "_rating": rating})
    purchases = clicks.filter(pl.col("_rating") >= PURCHASE_MIN_RATING).with_columns(
        pl.lit(S.PURCHASE).alias(S.EVENT), (pl.col(S.TIMESTAMP) + pl.duration(seconds=1)).alias(S.TIMESTAMP)
    )
    frame = pl.concat([clicks, purchases]).with_columns(
        pl.col(S.EVENT).replace_strict({S.CLICK: 0, S.PURCHASE: 1}, return_dtype=pl.Int8).alias("_order")
    )
    frame = frame.sort([S.TIMESTAMP, S.USER_ID, S.ITEM_ID, "_order"]).select(S.USER_ID, S.ITEM_ID, S.EVENT, S.TIMESTAMP)
    return validate_events(frame, path, item_id_dtype=pl.Int64)


def _items(path: Path, item_id: pl.Series, title: pl.Series, year: pl.Series, released: pl.Series, genres: list[list[str]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            S.ITEM_ID: _numeric(path, item_id, pl.Int64, "integer ids"),
            S.TITLE: title.alias(S.TITLE),
            "_year": year.cast(pl.Int32),
            "_genres": pl.Series([", ".join(g) if g else S.UNKNOWN for g in genres], dtype=pl.String),
            S.CATEGORY: pl.Series([g[0] if g else S.UNKNOWN for g in genres], dtype=pl.String),
            S.DOMAIN: pl.Series([DOMAIN] * len(genres), dtype=pl.String),
            S.CREATED_AT: released.alias(S.CREATED_AT),
        }
    )
    year_text = pl.when(pl.col("_year").is_not_null()).then(pl.format("Year: {}. ", pl.col("_year"))).otherwise(pl.lit(""))
    description = pl.concat_str([year_text, pl.lit("Genres: "), pl.col("_genres"), pl.lit(".")]).alias(S.DESCRIPTION)
    frame = frame.with_columns(description).select(S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.CATEGORY, S.DOMAIN, S.CREATED_AT)
    return validate_items(frame, path)


def _split_title(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """'Toy Story (1995)' → ('Toy Story', 1995); titles without a trailing year stay as they are."""
    year = raw.str.extract(_YEAR_IN_TITLE.pattern, 1).cast(pl.Int32, strict=False)
    return raw.str.replace(_YEAR_IN_TITLE.pattern, "").str.strip_chars().alias(S.TITLE), year


def _grouplens(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    data_path, item_path = root / "u.data", root / "u.item"
    names, rows = _rows(item_path, "|", _UITEM_COLUMNS, header=False)
    title, title_year = _split_title(_column(item_path, names, rows, "movie title"))
    released = _column(item_path, names, rows, "release date").str.to_date("%d-%b-%Y", strict=False)
    year = released.dt.year().cast(pl.Int32).fill_null(title_year).alias("year")
    genres: list[list[str]] = [[] for _ in rows]
    for genre in GENRES:
        flags = _column(item_path, names, rows, genre)
        bad = ~flags.is_in(["0", "1"])
        if bad.any():
            raise SchemaError(
                item_path,
                genre,
                f"{int(bad.sum())} genre flag(s) are not 0 or 1",
                ", ".join(repr(v) for v in flags.filter(bad).head(3).to_list()),
            )
        for i in flags.eq("1").arg_true().to_list():
            genres[i].append(genre)
    items = _items(item_path, _column(item_path, names, rows, "movie id"), title, year, released.cast(pl.Datetime(S.TIME_UNIT)), genres)
    names, rows = _rows(data_path, "\t", _UDATA_COLUMNS, header=False)
    events = _events(data_path, *(_column(data_path, names, rows, c) for c in _UDATA_COLUMNS))
    return items, events


def _recbole(inter_path: Path, item_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    names, rows = _rows(item_path, "\t", _ITEM_COLUMNS, header=True)
    title, title_year = _split_title(_column(item_path, names, rows, "movie_title"))
    parsed = (
        _column(item_path, names, rows, "release_year").cast(pl.Int32, strict=False).fill_null(title_year).to_list()
    )  # 'unkonwn' → null
    year = pl.Series("year", [y if y is not None and 1800 <= y <= 2100 else None for y in parsed], dtype=pl.Int32)
    released = pl.Series(
        [None if y is None else dt.datetime(y, 1, 1) for y in year.to_list()], dtype=pl.Datetime(S.TIME_UNIT)
    )  # only the year is known
    genres = [g.split() for g in _column(item_path, names, rows, "class").to_list()]
    items = _items(item_path, _column(item_path, names, rows, "item_id"), title, year, released, genres)
    names, rows = _rows(inter_path, "\t", _INTER_COLUMNS, header=True)
    events = _events(inter_path, *(_column(inter_path, names, rows, c) for c in _INTER_COLUMNS))
    return items, events


def load_movielens(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read MovieLens-100k from a folder (GroupLens or RecBole files) into canonical (items, events) frames."""
    root = Path(path)
    if root.is_file():
        root = root.parent
    if not root.exists():
        raise SchemaError(root, None, "directory does not exist")
    if not any((root / name).exists() for name in ("u.data", "u.item", "ml-100k.inter", "ml-100k.item")) and (root / "ml-100k").is_dir():
        root = root / "ml-100k"  # the folder that holds the unpacked archive
    if (root / "u.data").exists() or (root / "u.item").exists():
        return _grouplens(root)
    inter = root / "ml-100k.inter"
    if not inter.exists():
        found = sorted(root.glob("*.inter"))
        if len(found) == 1:
            inter = found[0]
    if inter.exists() or (root / "ml-100k.item").exists():
        return _recbole(inter, inter.with_suffix(".item"))
    raise SchemaError(root, None, "holds neither GroupLens files (u.data + u.item) nor RecBole files (ml-100k.inter + ml-100k.item)")


def convert_movielens(src: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write MovieLens-100k as out_dir/items.parquet and out_dir/events.parquet (atomically); returns counts."""
    items, events = load_movielens(src)
    out = Path(out_dir)
    with atomic_path(out / "items.parquet") as tmp:
        items.write_parquet(tmp)
    with atomic_path(out / "events.parquet") as tmp:
        events.write_parquet(tmp)
    counts = events.group_by(S.EVENT).len()
    by_event = dict(zip(counts[S.EVENT].to_list(), counts["len"].to_list(), strict=True))
    return {
        "items": items.height,
        "users": events[S.USER_ID].n_unique(),
        "events": {S.CLICK: int(by_event.get(S.CLICK, 0)), S.PURCHASE: int(by_event.get(S.PURCHASE, 0))},
        "items_path": str(out / "items.parquet"),
        "events_path": str(out / "events.parquet"),
    }
