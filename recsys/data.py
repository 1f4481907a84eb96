"""Loaders for the items and events contracts (docs/ARCHITECTURE.md, "Data"): read, validate, canonicalise.

Every problem with a file is raised as a `SchemaError` that names the file, the column and what is wrong.
Canonical frames: ids keep their type (Int64 or String, the same in items and events), timestamps are
naive `Datetime("us")` (UTC), optional item columns always exist (filled), `event` is lower-case.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.errors import SchemaError

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


def read_table(path: str | Path, report: LoadReport | None = None) -> pl.DataFrame:
    """Read one Parquet/CSV file, or every such file in a directory, into one frame.

    In a directory of daily files an empty file (a quiet day) is skipped with a warning rather than
    failing the nightly job; a directory of nothing but empty files is still an error.
    """
    path = Path(path)
    files = _files(path)
    if path.is_dir() and len(files) > 1:
        frames, empty = [], []
        for file in files:
            try:
                frames.append(_read_one(file))
            except SchemaError as exc:
                if exc.problem != "file holds no rows":
                    raise
                empty.append(file.name)
        if not frames:
            raise SchemaError(path, None, "every file in the directory is empty")
        if empty and report is not None:
            report.warnings.append(f"{path}: skipped {len(empty)} empty file(s) (e.g. {', '.join(empty[:3])})")
    else:
        frames = [_read_one(p) for p in files]
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except Exception as exc:
        raise SchemaError(path, None, f"daily files do not share one schema: {str(exc).splitlines()[0]}") from None


def _examples(values: pl.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in values.head(n).to_list())


def _column_names(frame: pl.DataFrame, n: int = 12) -> str:
    names = [name if len(name) <= 40 else name[:37] + "..." for name in frame.columns[:n]]
    return ", ".join(repr(name) for name in names) + (f" and {frame.width - n} more" if frame.width > n else "")


def _require_rows(frame: pl.DataFrame, path: Path) -> None:
    if frame.height == 0:
        raise SchemaError(path, None, "holds no rows")


def _require(frame: pl.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise SchemaError(path, column, f"required column is missing (found: {_column_names(frame)})")


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
        raise SchemaError(
            path, column, f"{nulls} null id(s)", f"rows {_examples(frame.with_row_index()['index'].filter(series.is_null()))}"
        )
    return series


def _text_column(frame: pl.DataFrame, path: Path, column: str, required: bool) -> pl.Series:
    if column not in frame.columns:
        return pl.Series(column, [""] * frame.height, dtype=pl.String)
    series = frame[column]
    if series.dtype == pl.Null:
        series = series.cast(pl.String)
    if series.dtype not in (pl.String, pl.Categorical, pl.Enum):
        scalar = series.dtype.is_numeric() or series.dtype.is_temporal() or series.dtype == pl.Boolean
        if required or not scalar:
            raise SchemaError(path, column, f"must be text, found {series.dtype}")
        series = series.cast(pl.String)
    return series.cast(pl.String).fill_null("")


# Timestamps must be dates Python can hold (years 1 to 9999), as epoch seconds.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_SECONDS_PER_UNIT = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _timestamp_column(series: pl.Series, path: Path, column: str, nullable: bool) -> pl.Series:
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        _check_range(series, series.to_physical().cast(pl.Float64) * _SECONDS_PER_UNIT[dtype.time_unit], path, column)
        # an aware timestamp is converted to UTC first: the canonical form is naive UTC
        out = series.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if dtype.time_zone else series
        out = out.dt.cast_time_unit(S.TIME_UNIT)
    elif dtype == pl.Date:
        _check_range(series, series.to_physical().cast(pl.Float64) * 86_400, path, column)
        out = series.cast(pl.Datetime(S.TIME_UNIT))
    elif dtype.is_integer() or dtype.is_float():
        seconds = series.cast(pl.Float64)
        _check_range(series, seconds, path, column)
        out = (seconds * 1_000_000).round().cast(pl.Int64).cast(pl.Datetime(S.TIME_UNIT))
    elif dtype == pl.String:
        try:
            out = series.str.to_datetime(time_unit=S.TIME_UNIT, strict=False)
        except pl.exceptions.PolarsError:  # no value gives polars a format to infer
            out = pl.repeat(None, series.len(), dtype=pl.Datetime(S.TIME_UNIT), eager=True).alias(column)
        if isinstance(out.dtype, pl.Datetime) and out.dtype.time_zone:
            out = out.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        bad = out.is_null() & series.is_not_null()
        if bad.any():
            raise SchemaError(path, column, f"{int(bad.sum())} value(s) are not timestamps", _examples(series.filter(bad)))
        _check_range(series, out.to_physical().cast(pl.Float64) * 1e-6, path, column)
    elif dtype == pl.Null and nullable:
        out = series.cast(pl.Datetime(S.TIME_UNIT))
    else:
        raise SchemaError(path, column, f"must be a datetime or epoch seconds, found {dtype}")
    if not nullable and out.null_count():
        raise SchemaError(
            path, column, f"{out.null_count()} null timestamp(s)", f"rows {_examples(pl.Series(range(out.len())).filter(out.is_null()))}"
        )
    return out.alias(column)


def _check_range(series: pl.Series, seconds: pl.Series, path: Path, column: str) -> None:
    """Refuse NaN, infinity and dates outside years 1-9999 (most often epoch milli- or nanoseconds)."""
    bad = seconds.is_not_null() & (seconds.is_nan() | (seconds < _MIN_SECONDS) | (seconds > _MAX_SECONDS))
    if bad.any():
        kind = "epoch seconds" if series.dtype.is_numeric() else "values"
        examples = _examples(series.filter(bad).to_physical() if series.dtype.is_temporal() else series.filter(bad))
        raise SchemaError(path, column, f"{int(bad.sum())} {kind} outside years 1-9999 (epoch milli- or nanoseconds?)", examples)


def validate_items(frame: pl.DataFrame, path: str | Path = "<items>", *, report: LoadReport | None = None) -> pl.DataFrame:
    """Check an items frame against the contract and return its canonical form.

    An item whose title and description are both empty (or only spaces and control characters) is kept,
    since its events still count, and gets a title made of its category and domain, or else its id; the
    repair is counted in `report`.
    """
    path = Path(path)
    report = report if report is not None else LoadReport()
    _require_rows(frame, path)
    _require(frame, path, S.ITEM_REQUIRED)
    item_id = _id_column(frame, path, S.ITEM_ID)
    duplicated = item_id.is_duplicated()
    if duplicated.any():
        raise SchemaError(
            path,
            S.ITEM_ID,
            f"{int(duplicated.sum())} rows share an id; ids must be unique",
            _examples(item_id.filter(duplicated).unique(maintain_order=True)),
        )
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
        columns.append(pl.repeat(None, frame.height, dtype=pl.Float64, eager=True).alias(S.PRICE))
    if S.CREATED_AT in frame.columns:
        columns.append(_timestamp_column(frame[S.CREATED_AT], path, S.CREATED_AT, nullable=True))
    else:
        columns.append(pl.repeat(None, frame.height, dtype=pl.Datetime(S.TIME_UNIT), eager=True).alias(S.CREATED_AT))
    return _repair_empty_text(pl.DataFrame(columns), path, report)


_INVISIBLE = r"[\s\p{Cc}\p{Cf}]+"  # what serving.text.clean_text removes or collapses


def _has_visible_text(column: str) -> pl.Expr:
    return pl.col(column).str.replace_all(_INVISIBLE, "").str.len_chars() > 0


def _known(column: str) -> pl.Expr:
    return pl.when(pl.col(column) != S.UNKNOWN).then(pl.col(column))


def _repair_empty_text(items: pl.DataFrame, path: Path, report: LoadReport) -> pl.DataFrame:
    empty = items.select(~(_has_visible_text(S.TITLE) | _has_visible_text(S.DESCRIPTION))).to_series()
    if not empty.any():
        return items
    stand_in = pl.concat_str([_known(S.CATEGORY), _known(S.DOMAIN)], separator=" ", ignore_nulls=True)
    stand_in = (
        pl.when(stand_in.str.replace_all(_INVISIBLE, "").str.len_chars() > 0).then(stand_in).otherwise(pl.col(S.ITEM_ID).cast(pl.String))
    )
    report.repair(
        "empty_text_item",
        int(empty.sum()),
        f"{path}: {int(empty.sum())} item(s) have no title nor description; kept, titled by category and domain (or id)",
        _examples(items[S.ITEM_ID].filter(empty)),
    )
    return items.with_columns(pl.when(pl.Series(empty)).then(stand_in).otherwise(pl.col(S.TITLE)).alias(S.TITLE))


@dataclass
class LoadReport:
    """Rows dropped or repaired while loading, by reason; goes into every output manifest.

    `warnings` holds one line per reason (file, count, a few examples) for the CLI to print.
    """

    dropped: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def add(self, reason: str, count: int, warning: str | None = None, examples: str | None = None) -> None:
        """Count `count` dropped rows under `reason`."""
        self._count(self.dropped, reason, count, warning, examples)

    def repair(self, reason: str, count: int, warning: str | None = None, examples: str | None = None) -> None:
        """Count `count` rows kept after a repair under `reason`."""
        self._count(self.repaired, reason, count, warning, examples)

    def _count(self, counts: dict[str, int], reason: str, count: int, warning: str | None, examples: str | None) -> None:
        if count:
            counts[reason] = counts.get(reason, 0) + int(count)
            if warning:
                self.warnings.append(warning + (f" (e.g. {examples})" if examples else ""))


def validate_events(
    frame: pl.DataFrame,
    path: str | Path = "<events>",
    *,
    item_id_dtype: pl.DataType | None = None,
    report: LoadReport | None = None,
    now: dt.datetime | None = None,
) -> pl.DataFrame:
    """Check an events frame against the contract and return its canonical form.

    Exact duplicate rows and events dated after `now` (default: the current UTC time) are dropped and
    counted in `report`; an event log left empty by that is an error.
    """
    path = Path(path)
    report = report if report is not None else LoadReport()
    _require_rows(frame, path)
    _require(frame, path, S.EVENT_REQUIRED)
    user_id = _id_column(frame, path, S.USER_ID)
    item_id = _id_column(frame, path, S.ITEM_ID)
    if item_id_dtype is not None and item_id.dtype != item_id_dtype:
        cast = item_id.cast(item_id_dtype, strict=False)
        failed = cast.is_null() & item_id.is_not_null()
        if failed.any():
            raise SchemaError(
                path, S.ITEM_ID, f"is {item_id.dtype} but items.item_id is {item_id_dtype}", _examples(item_id.filter(failed))
            )
        item_id = cast
    if frame[S.EVENT].dtype not in (pl.String, pl.Categorical, pl.Enum):
        raise SchemaError(path, S.EVENT, f"must be text ({'/'.join(S.EVENT_TYPES)}), found {frame[S.EVENT].dtype}")
    event = frame[S.EVENT].cast(pl.String).str.strip_chars().str.to_lowercase()
    unknown = ~event.is_in(list(S.EVENT_TYPES)) | event.is_null()
    if unknown.any():
        raise SchemaError(
            path,
            S.EVENT,
            f"{int(unknown.sum())} row(s) with an unknown event type; expected one of {', '.join(S.EVENT_TYPES)}",
            _examples(frame[S.EVENT].filter(unknown).unique(maintain_order=True)),
        )
    columns = [user_id, item_id, event.alias(S.EVENT), _timestamp_column(frame[S.TIMESTAMP], path, S.TIMESTAMP, nullable=False)]
    if S.SESSION_ID in frame.columns:
        session = frame[S.SESSION_ID]
        if not (session.dtype.is_numeric() or session.dtype in (pl.String, pl.Categorical, pl.Enum, pl.Null, pl.Boolean)):
            raise SchemaError(path, S.SESSION_ID, f"must be text or a number, found {session.dtype}")
        columns.append(session.cast(pl.String))
    else:
        columns.append(pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias(S.SESSION_ID))
    if S.POSITION in frame.columns:
        position = frame[S.POSITION]
        if not (position.dtype.is_integer() or position.dtype == pl.Null):
            raise SchemaError(path, S.POSITION, f"must be an integer, found {position.dtype}")
        cast = position.cast(pl.Int32, strict=False)
        overflow = cast.is_null() & position.is_not_null()
        if overflow.any():
            raise SchemaError(
                path, S.POSITION, f"{int(overflow.sum())} value(s) do not fit a 32-bit integer", _examples(position.filter(overflow))
            )
        columns.append(cast)
    else:
        columns.append(pl.repeat(None, frame.height, dtype=pl.Int32, eager=True).alias(S.POSITION))
    events, duplicates = _drop_exact_duplicates(pl.DataFrame(columns))
    report.add("duplicate_event", duplicates, f"{path}: dropped {duplicates} exact duplicate event(s)")
    now = _naive_utc(now if now is not None else dt.datetime.now(dt.UTC))
    future = events[S.TIMESTAMP] > now
    if future.all():
        raise SchemaError(
            path,
            S.TIMESTAMP,
            f"every event is dated after now ({now:%Y-%m-%d %H:%M} UTC); is a clock or the time zone wrong?",
            _examples(events[S.TIMESTAMP]),
        )
    if future.any():
        report.add(
            "future_timestamp",
            int(future.sum()),
            f"{path}: dropped {int(future.sum())} event(s) dated after now ({now:%Y-%m-%d %H:%M} UTC)",
            _examples(events[S.TIMESTAMP].filter(future).sort(descending=True)),
        )
        events = events.filter(~future)
    return events


def _drop_exact_duplicates(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """`frame.unique(maintain_order=True)` (first occurrences kept, in order) and how many rows it dropped.

    A whole-row unique of a 5M-event log peaked at 1.5 GB above the frame itself; one 64-bit hash per
    row, sorted, finds the rows that may repeat, and only those are compared exactly (+~0.3 GB).
    """
    import numpy as np

    if frame.height < 2:
        return frame, 0
    hashes = np.zeros(frame.height, dtype=np.uint64)
    for seed, column in enumerate(frame.columns):
        hashes = hashes * np.uint64(0x100000001B3) ^ frame[column].hash(seed=seed).to_numpy()
    order = np.argsort(hashes, kind="stable")
    repeats = hashes[order[1:]] == hashes[order[:-1]]
    if not repeats.any():
        return frame, 0
    suspects = np.unique(np.concatenate([order[1:][repeats], order[:-1][repeats]]))
    kept = (
        frame[suspects]
        .with_columns(pl.Series("_row", suspects))
        .unique(subset=frame.columns, keep="first", maintain_order=True)["_row"]
        .to_numpy()
    )
    keep = np.ones(frame.height, dtype=bool)
    keep[np.setdiff1d(suspects, kept)] = False
    return frame.filter(pl.Series(keep)), int((~keep).sum())


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def load_items(path: str | Path, *, report: LoadReport | None = None) -> pl.LazyFrame:
    """Read and validate an items file (or directory of files); canonical LazyFrame."""
    return validate_items(read_table(path), path, report=report).lazy()


def load_events(
    path: str | Path, *, items: pl.LazyFrame | None = None, report: LoadReport | None = None, now: dt.datetime | None = None
) -> pl.LazyFrame:
    """Read and validate events (a file or a directory of daily files); canonical LazyFrame.

    With `items`, events of items missing from the catalog are dropped and counted in `report`.
    """
    report = report if report is not None else LoadReport()
    item_dtype = items.collect_schema()[S.ITEM_ID] if items is not None else None
    events = validate_events(read_table(path, report), path, item_id_dtype=item_dtype, report=report, now=now)
    if items is not None:
        known = items.select(S.ITEM_ID).collect()[S.ITEM_ID]
        keep = events[S.ITEM_ID].is_in(known.implode())
        unknown = events[S.ITEM_ID].filter(~keep)
        report.add(
            "unknown_item",
            unknown.len(),
            f"{path}: dropped {unknown.len()} event(s) of items not in the catalog",
            _examples(unknown.unique(maintain_order=True)),
        )
        events = events.filter(keep)
        if events.height == 0:
            raise SchemaError(path, S.ITEM_ID, "no event refers to an item of the catalog")
    return _sorted_by_time(events).lazy()


def _sorted_by_time(events: pl.DataFrame) -> pl.DataFrame:
    """Events by (timestamp, user_id), stable. Logs usually arrive in time order already: checking that
    costs a pass over two columns, where the sort peaked at 2.4x the frame's memory (5M events)."""
    by_time = events[S.TIMESTAMP].to_physical().diff()
    by_user = events[S.USER_ID].to_physical().diff() if events[S.USER_ID].dtype.is_numeric() else None
    if by_user is not None and events.height > 1 and ((by_time > 0) | ((by_time == 0) & (by_user >= 0))).slice(1).all():
        return events
    return events.sort([S.TIMESTAMP, S.USER_ID], maintain_order=True)


@dataclass
class Dataset:
    """Validated items and events, and what loading dropped."""

    items: pl.LazyFrame
    events: pl.LazyFrame
    report: LoadReport
    items_path: Path | None = None
    events_path: Path | None = None


def load_dataset(items_path: str | Path, events_path: str | Path, *, now: dt.datetime | None = None) -> Dataset:
    """Load and cross-check items and events; what was dropped or repaired is in `Dataset.report`."""
    report = LoadReport()
    items = load_items(items_path, report=report)
    events = load_events(events_path, items=items, report=report, now=now)
    return Dataset(items, events, report, Path(items_path), Path(events_path))


def write_table(frame: pl.DataFrame, path: str | Path) -> None:
    """Write Parquet or CSV by suffix, atomically (see recsys.contracts.files)."""
    from recsys.contracts.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            frame.write_csv(tmp)
        else:
            frame.write_parquet(tmp)
