"""Loaders: canonical frames from good files, one clear SchemaError per bad file."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from recsys.contracts import schema as S
from recsys.contracts.errors import SchemaError
from recsys.data import load_dataset, load_events, load_items


def items_frame(**overrides):
    data = {S.ITEM_ID: [1, 2, 3], S.TITLE: ["red shoes", "blue hat", "green scarf"]}
    data.update(overrides)
    return pl.DataFrame(data)


def events_frame(**overrides):
    data = {
        S.USER_ID: [10, 10, 11],
        S.ITEM_ID: [1, 2, 3],
        S.EVENT: ["click", "purchase", "impression"],
        S.TIMESTAMP: [dt.datetime(2026, 1, 1, 10), dt.datetime(2026, 1, 1, 11), dt.datetime(2026, 1, 2)],
    }
    data.update(overrides)
    return pl.DataFrame(data)


def test_items_get_canonical_columns(tmp_path):
    path = tmp_path / "items.parquet"
    items_frame().write_parquet(path)
    items = load_items(path).collect()
    assert items.columns == [S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.CATEGORY, S.DOMAIN, S.PRICE, S.CREATED_AT]
    assert items[S.CATEGORY].to_list() == [S.UNKNOWN] * 3
    assert items.schema[S.CREATED_AT] == pl.Datetime("us")


def test_events_from_a_directory_of_daily_csv_files_with_epoch_seconds(tmp_path):
    (tmp_path / "events").mkdir()
    items_frame().write_parquet(tmp_path / "items.parquet")
    for day, rows in enumerate(([10, 1, "click", 1767261600], [11, 2, "Purchase", 1767348000])):
        pl.DataFrame([rows], schema=[S.USER_ID, S.ITEM_ID, S.EVENT, S.TIMESTAMP], orient="row").write_csv(
            tmp_path / "events" / f"day{day}.csv"
        )
    data = load_dataset(tmp_path / "items.parquet", tmp_path / "events")
    events = data.events.collect()
    assert events.height == 2
    assert events[S.EVENT].to_list() == ["click", "purchase"]
    assert events[S.TIMESTAMP][0] == dt.datetime(2026, 1, 1, 10)


def test_events_of_unknown_items_are_dropped_and_counted(tmp_path):
    items_frame().write_parquet(tmp_path / "items.parquet")
    events_frame(**{S.ITEM_ID: [1, 2, 99]}).write_parquet(tmp_path / "events.parquet")
    data = load_dataset(tmp_path / "items.parquet", tmp_path / "events.parquet")
    assert data.events.collect().height == 2
    assert data.report.dropped == {"unknown_item": 1}


@pytest.mark.parametrize(
    "frame, column, message",
    [
        (items_frame().drop(S.TITLE), S.TITLE, "missing"),
        (items_frame(**{S.ITEM_ID: [1, None, 3]}), S.ITEM_ID, "null"),
        (items_frame(**{S.ITEM_ID: [1, 1, 3]}), S.ITEM_ID, "share an id"),
        (items_frame(**{S.ITEM_ID: [1.5, 2.5, 3.5]}), S.ITEM_ID, "int64 or string"),
        (items_frame(**{S.PRICE: ["a", "b", "c"]}), S.PRICE, "numeric"),
    ],
)
def test_bad_items_name_file_and_column(tmp_path, frame, column, message):
    path = tmp_path / "items.parquet"
    frame.write_parquet(path)
    with pytest.raises(SchemaError) as info:
        load_items(path)
    assert str(path) in str(info.value) and f"'{column}'" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    "frame, column, message",
    [
        (events_frame().drop(S.EVENT), S.EVENT, "missing"),
        (events_frame(**{S.EVENT: ["click", "view", "click"]}), S.EVENT, "unknown event type"),
        (events_frame(**{S.TIMESTAMP: ["2026-01-01", "yesterday", "2026-01-02"]}), S.TIMESTAMP, "not timestamps"),
        (events_frame(**{S.USER_ID: [1, None, 2]}), S.USER_ID, "null"),
        (events_frame(**{S.ITEM_ID: ["a", "b", "c"]}), S.ITEM_ID, "items.item_id is Int64"),
    ],
)
def test_bad_events_name_file_and_column(tmp_path, frame, column, message):
    items_frame().write_parquet(tmp_path / "items.parquet")
    path = tmp_path / "events.parquet"
    frame.write_parquet(path)
    with pytest.raises(SchemaError) as info:
        load_dataset(tmp_path / "items.parquet", path)
    assert str(path) in str(info.value) and f"'{column}'" in str(info.value) and message in str(info.value)


def test_empty_and_foreign_files_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(f"{S.ITEM_ID},{S.TITLE}\n")
    with pytest.raises(SchemaError, match="no rows"):
        load_items(empty)
    fake = tmp_path / "items.parquet"
    fake.write_text("this is not parquet")
    with pytest.raises(SchemaError, match="cannot be read as parquet"):
        load_items(fake)
    with pytest.raises(SchemaError, match="does not exist"):
        load_events(tmp_path / "nope.parquet")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SchemaError, match="unsupported file type"):
        load_items(tmp_path / "notes.txt")


def test_string_ids_work_end_to_end(tmp_path):
    items_frame(**{S.ITEM_ID: ["a", "b", "c"]}).write_parquet(tmp_path / "items.parquet")
    events_frame(**{S.ITEM_ID: ["a", "b", "c"], S.USER_ID: ["u1", "u1", "u2"]}).write_parquet(tmp_path / "events.parquet")
    data = load_dataset(tmp_path / "items.parquet", tmp_path / "events.parquet")
    assert data.events.collect_schema()[S.ITEM_ID] == pl.String


def test_an_empty_daily_file_is_skipped_with_a_warning(tmp_path):
    items_frame().write_parquet(tmp_path / "items.parquet")
    days = tmp_path / "events"
    days.mkdir()
    events_frame().write_parquet(days / "2026-01-01.parquet")
    events_frame().head(0).write_parquet(days / "2026-01-02.parquet")
    data = load_dataset(tmp_path / "items.parquet", days)
    assert data.events.collect().height == 3
    assert any("2026-01-02.parquet" in warning for warning in data.report.warnings)
    (days / "2026-01-01.parquet").unlink()
    events_frame().head(0).write_parquet(days / "2026-01-03.parquet")
    with pytest.raises(SchemaError, match="every file in the directory is empty"):
        load_dataset(tmp_path / "items.parquet", days)


def test_exact_duplicates_are_dropped_like_a_whole_row_unique():
    """The hash-based duplicate drop keeps exactly what `unique(maintain_order=True)` keeps."""
    import numpy as np

    from recsys.data import _drop_exact_duplicates

    rng = np.random.default_rng(0)
    n = 5_000
    frame = pl.DataFrame(
        {
            S.USER_ID: rng.integers(0, 40, n),
            S.ITEM_ID: rng.integers(0, 30, n),
            S.EVENT: rng.choice(["click", "purchase", "impression"], n),
            S.SESSION_ID: pl.Series(rng.choice(["a", "b", None], n), dtype=pl.String),
            S.POSITION: pl.Series(rng.integers(0, 3, n), dtype=pl.Int32),
        }
    )
    got, dropped = _drop_exact_duplicates(frame)
    want = frame.unique(maintain_order=True)
    assert got.equals(want) and dropped == n - want.height > 0
    same, none = _drop_exact_duplicates(want)
    assert same.equals(want) and none == 0


def test_events_come_out_in_time_then_user_order(tmp_path):
    from recsys.data import _sorted_by_time

    t = dt.datetime(2026, 1, 1)
    frame = pl.DataFrame({S.USER_ID: [3, 1, 2, 1], S.TIMESTAMP: [t, t, t - dt.timedelta(seconds=1), t + dt.timedelta(seconds=1)]})
    assert _sorted_by_time(frame)[S.USER_ID].to_list() == [2, 1, 3, 1]
    ordered = frame.sort([S.TIMESTAMP, S.USER_ID])
    assert _sorted_by_time(ordered) is ordered  # already in order: returned as it is, no copy
