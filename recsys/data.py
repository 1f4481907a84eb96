"""Loaders for the items and events contracts (DESIGN.md §1): read, validate, canonicalise.

Every problem with a file is raised as a `SchemaError` that names the file, the column and what is wrong.
Canonical frames: ids keep their type (Int64 or String, the same in items and events), timestamps are
naive `Datetime("us")` (UTC), optional item columns always exist (filled), `event` is lower-case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys import schema as S
from recsys.errors import SchemaError

_SUFFIXES = {".parquet", ".pq", ".csv"}


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise SchemaError(path, None, "file or directory does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)
        if not files:
            raise SchemaError(path, None, "directory holds no .parquet or .csv files")
        return files
    return [path]


def _read_one(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(path)
        elif suffix == ".csv":
            frame = pl.read_csv(path, infer_schema_length=10_000, try_parse_dates=False)
        else:
            raise SchemaError(path, None, f"unsupported file type '{suffix or path.name}': expected .parquet or .csv")
    except SchemaError:
        raise
    except Exception as exc:  # polars / arrow raise many types for a file that is not what it claims to be
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(path, None, f"cannot be read as {suffix.lstrip('.')}: {first}") from None
    if frame.height == 0:
        raise SchemaError(path, None, "file holds no rows")
    return frame


def read_table(path: str | Path) -> pl.DataFrame:
    """Read one Parquet/CSV file, or every such file in a directory, into one frame."""
    path = Path(path)
    frames = [_read_one(p) for p in _files(path)]
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except Exception as exc:
        raise SchemaError(path, None, f"daily files do not share one schema: {str(exc).splitlines()[0]}") from None


def _examples(values: pl.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in values.head(n).to_list())


def _require(frame: pl.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise SchemaError(path, column, f"required column is missing (found: {', '.join(frame.columns)})")


def _id_column(frame: pl.DataFrame, path: Path, column: str) -> pl.Series:
    series = frame[column]
    if series.dtype.is_integer():
        series = series.cast(pl.Int64)
    elif series.dtype in (pl.String, pl.Categorical, pl.Enum):
        series = series.cast(pl.String)
    else:
        raise SchemaError(path, column, f"must be int64 or string, found {series.dtype}")
    nulls = series.null_count()
    if nulls:
        raise SchemaError(path, column, f"{nulls} null id(s)", f"rows {_examples(frame.with_row_index()['index'].filter(series.is_null()))}")
    return series


def _text_column(frame: pl.DataFrame, path: Path, column: str, required: bool) -> pl.Series:
    if column not in frame.columns:
        return pl.Series(column, [""] * frame.height, dtype=pl.String)
    series = frame[column]
    if series.dtype == pl.Null:
        series = series.cast(pl.String)
    if series.dtype not in (pl.String, pl.Categorical, pl.Enum):
        if required:
            raise SchemaError(path, column, f"must be text, found {series.dtype}")
        series = series.cast(pl.String)
    return series.cast(pl.String).fill_null("")


def _timestamp_column(series: pl.Series, path: Path, column: str, nullable: bool) -> pl.Series:
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        out = series.dt.replace_time_zone(None) if dtype.time_zone else series
        out = out.dt.cast_time_unit(S.TIME_UNIT)
    elif dtype == pl.Date:
        out = series.cast(pl.Datetime(S.TIME_UNIT))
    elif dtype.is_integer() or dtype.is_float():
        out = (series.cast(pl.Float64) * 1_000_000).round().cast(pl.Int64).cast(pl.Datetime(S.TIME_UNIT))
    elif dtype == pl.String:
        out = series.str.to_datetime(time_unit=S.TIME_UNIT, strict=False)
        if out.dtype.time_zone if isinstance(out.dtype, pl.Datetime) else None:
            out = out.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        bad = out.is_null() & series.is_not_null()
        if bad.any():
            raise SchemaError(path, column, f"{int(bad.sum())} value(s) are not timestamps", _examples(series.filter(bad)))
    elif dtype == pl.Null and nullable:
        out = series.cast(pl.Datetime(S.TIME_UNIT))
    else:
        raise SchemaError(path, column, f"must be a datetime or epoch seconds, found {dtype}")
    if not nullable and out.null_count():
        raise SchemaError(path, column, f"{out.null_count()} null timestamp(s)")
    return out.alias(column)


def validate_items(frame: pl.DataFrame, path: str | Path = "<items>") -> pl.DataFrame:
    """Check an items frame against the contract and return its canonical form."""
    path = Path(path)
    _require(frame, path, S.ITEM_REQUIRED)
    item_id = _id_column(frame, path, S.ITEM_ID)
    duplicated = item_id.is_duplicated()
    if duplicated.any():
        raise SchemaError(path, S.ITEM_ID, f"{int(duplicated.sum())} rows share an id; ids must be unique", _examples(item_id.filter(duplicated).unique(maintain_order=True)))
    columns = [
        item_id,
        _text_column(frame, path, S.TITLE, required=True),
        _text_column(frame, path, S.DESCRIPTION, required=False),
        _text_column(frame, path, S.CATEGORY, required=False).replace("", S.UNKNOWN),
        _text_column(frame, path, S.DOMAIN, required=False).replace("", S.UNKNOWN),
    ]
    if S.PRICE in frame.columns:
        price = frame[S.PRICE]
        if not (price.dtype.is_numeric() or price.dtype == pl.Null):
            raise SchemaError(path, S.PRICE, f"must be numeric, found {price.dtype}")
        columns.append(price.cast(pl.Float64))
    else:
        columns.append(pl.Series(S.PRICE, [None] * frame.height, dtype=pl.Float64))
    if S.CREATED_AT in frame.columns:
        columns.append(_timestamp_column(frame[S.CREATED_AT], path, S.CREATED_AT, nullable=True))
    else:
        columns.append(pl.Series(S.CREATED_AT, [None] * frame.height, dtype=pl.Datetime(S.TIME_UNIT)))
    return pl.DataFrame(columns)


@dataclass
class LoadReport:
    """Rows dropped or repaired while loading, by reason; goes into every output manifest."""

    dropped: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)


def validate_events(
    frame: pl.DataFrame,
    path: str | Path = "<events>",
    *,
    item_id_dtype: pl.DataType | None = None,
    report: LoadReport | None = None,
) -> pl.DataFrame:
    """Check an events frame against the contract and return its canonical form."""
    path = Path(path)
    report = report if report is not None else LoadReport()
    _require(frame, path, S.EVENT_REQUIRED)
    user_id = _id_column(frame, path, S.USER_ID)
    item_id = _id_column(frame, path, S.ITEM_ID)
    if item_id_dtype is not None and item_id.dtype != item_id_dtype:
        cast = item_id.cast(item_id_dtype, strict=False)
        failed = cast.is_null() & item_id.is_not_null()
        if failed.any():
            raise SchemaError(path, S.ITEM_ID, f"is {item_id.dtype} but items.item_id is {item_id_dtype}", _examples(item_id.filter(failed)))
        item_id = cast
    if frame[S.EVENT].dtype not in (pl.String, pl.Categorical, pl.Enum):
        raise SchemaError(path, S.EVENT, f"must be text ({'/'.join(S.EVENT_TYPES)}), found {frame[S.EVENT].dtype}")
    event = frame[S.EVENT].cast(pl.String).str.strip_chars().str.to_lowercase()
    unknown = ~event.is_in(list(S.EVENT_TYPES)) | event.is_null()
    if unknown.any():
        raise SchemaError(path, S.EVENT, f"{int(unknown.sum())} row(s) with an unknown event type; expected one of {', '.join(S.EVENT_TYPES)}", _examples(frame[S.EVENT].filter(unknown).unique(maintain_order=True)))
    columns = [user_id, item_id, event.alias(S.EVENT), _timestamp_column(frame[S.TIMESTAMP], path, S.TIMESTAMP, nullable=False)]
    if S.SESSION_ID in frame.columns:
        columns.append(frame[S.SESSION_ID].cast(pl.String))
    else:
        columns.append(pl.Series(S.SESSION_ID, [None] * frame.height, dtype=pl.String))
    if S.POSITION in frame.columns:
        position = frame[S.POSITION]
        if not (position.dtype.is_integer() or position.dtype == pl.Null):
            raise SchemaError(path, S.POSITION, f"must be an integer, found {position.dtype}")
        columns.append(position.cast(pl.Int32))
    else:
        columns.append(pl.Series(S.POSITION, [None] * frame.height, dtype=pl.Int32))
    events = pl.DataFrame(columns)
    before = events.height
    events = events.unique(maintain_order=True)
    report.add("duplicate_event", before - events.height)
    return events


def load_items(path: str | Path) -> pl.LazyFrame:
    """Read and validate an items file (or directory of files); canonical LazyFrame."""
    return validate_items(read_table(path), path).lazy()


def load_events(path: str | Path, *, items: pl.LazyFrame | None = None, report: LoadReport | None = None) -> pl.LazyFrame:
    """Read and validate events (a file or a directory of daily files); canonical LazyFrame.

    With `items`, events of items missing from the catalog are dropped and counted in `report`.
    """
    report = report if report is not None else LoadReport()
    item_dtype = items.collect_schema()[S.ITEM_ID] if items is not None else None
    events = validate_events(read_table(path), path, item_id_dtype=item_dtype, report=report)
    if items is not None:
        known = items.select(S.ITEM_ID).collect()[S.ITEM_ID]
        keep = events[S.ITEM_ID].is_in(known.implode())
        report.add("unknown_item", int((~keep).sum()))
        events = events.filter(keep)
        if events.height == 0:
            raise SchemaError(path, S.ITEM_ID, "no event refers to an item of the catalog")
    return events.sort([S.TIMESTAMP, S.USER_ID], maintain_order=True).lazy()


@dataclass
class Dataset:
    """Validated items and events, and what loading dropped."""

    items: pl.LazyFrame
    events: pl.LazyFrame
    report: LoadReport
    items_path: Path | None = None
    events_path: Path | None = None


def load_dataset(items_path: str | Path, events_path: str | Path) -> Dataset:
    """Load and cross-check items and events."""
    report = LoadReport()
    items = load_items(items_path)
    events = load_events(events_path, items=items, report=report)
    return Dataset(items, events, report, Path(items_path), Path(events_path))


def write_table(frame: pl.DataFrame, path: str | Path) -> None:
    """Write Parquet or CSV by suffix, atomically (see recsys.io)."""
    from recsys.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp)
