"""Bad input never crashes: every fatal problem is one line naming file and column, exit 2, nothing written;
every recoverable one is dropped or repaired, counted and warned about.

Property tests feed random schemas and values to the loaders and the feature functions: each either gives
a canonical result or raises SchemaError, never another exception.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import features
from recsys.cli import app
from recsys.contracts import schema as S
from recsys.contracts.errors import SchemaError
from recsys.data import LoadReport, load_dataset, read_table, validate_events, validate_items

runner = CliRunner()
NOW = dt.datetime(2026, 6, 1)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def items_frame(**overrides) -> pl.DataFrame:
    data = {S.ITEM_ID: [1, 2, 3], S.TITLE: ["red shoes", "blue hat", "green scarf"], S.CATEGORY: ["shoes", "hats", "scarves"]}
    data.update(overrides)
    return pl.DataFrame(data)


def events_frame(**overrides) -> pl.DataFrame:
    data = {
        S.USER_ID: [10, 10, 11, 12],
        S.ITEM_ID: [1, 2, 3, 1],
        S.EVENT: ["click", "purchase", "impression", "click"],
        S.TIMESTAMP: [dt.datetime(2026, 1, 1, 10), dt.datetime(2026, 1, 1, 11), dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3)],
    }
    data.update(overrides)
    return pl.DataFrame(data)


# --- fatal problems through the CLI: exit 2, one line naming file and column, nothing written --------------


def _write(frame_or_bytes, path: Path) -> Path:
    if isinstance(frame_or_bytes, bytes):
        path.write_bytes(frame_or_bytes)
    elif path.suffix == ".csv":
        frame_or_bytes.write_csv(path)
    else:
        frame_or_bytes.write_parquet(path)
    return path


BAD_ITEMS = {
    "missing title": (items_frame().drop(S.TITLE), "items.parquet", S.TITLE, "missing"),
    "mistyped title": (items_frame(**{S.TITLE: [1, 2, 3]}), "items.parquet", S.TITLE, "must be text"),
    "float ids": (items_frame(**{S.ITEM_ID: [1.5, 2.5, 3.5]}), "items.parquet", S.ITEM_ID, "int64 or string"),
    "null ids": (items_frame(**{S.ITEM_ID: [1, None, 3]}), "items.csv", S.ITEM_ID, "null id"),
    "duplicate ids": (items_frame(**{S.ITEM_ID: [1, 2, 1]}), "items.csv", S.ITEM_ID, "share an id"),
    "mistyped price": (items_frame(**{S.PRICE: ["cheap", "dear", "free"]}), "items.parquet", S.PRICE, "numeric"),
    "bad created_at": (items_frame(**{S.CREATED_AT: ["2026-01-01", "soon", None]}), "items.csv", S.CREATED_AT, "not timestamps"),
    "empty file": (f"{S.ITEM_ID},{S.TITLE}\n".encode(), "items.csv", None, "no rows"),
    "not parquet": (b"PK\x03\x04 this is a zip archive, not parquet", "items.parquet", None, "cannot be read as parquet"),
    "binary csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "items.csv", None, "cannot be read as csv"),
    "not a table": (b"hello", "items.json", None, "unsupported file type"),
}

BAD_EVENTS = {
    "missing timestamp": (events_frame().drop(S.TIMESTAMP), "events.parquet", S.TIMESTAMP, "missing"),
    "mistyped user_id": (events_frame(**{S.USER_ID: [0.5, 1.5, 2.5, 3.5]}), "events.parquet", S.USER_ID, "int64 or string"),
    "null user_id": (events_frame(**{S.USER_ID: [10, None, 11, 12]}), "events.csv", S.USER_ID, "null id"),
    "null item_id": (events_frame(**{S.ITEM_ID: [1, 2, None, 3]}), "events.parquet", S.ITEM_ID, "null id"),
    "unknown event": (events_frame(**{S.EVENT: ["click", "like", "view", "click"]}), "events.csv", S.EVENT, "unknown event type"),
    "numeric event": (events_frame(**{S.EVENT: [1, 2, 3, 1]}), "events.parquet", S.EVENT, "must be text"),
    "unparseable timestamps": (
        events_frame(**{S.TIMESTAMP: ["2026-01-01", "tomorrow", "2026-01-02", "2026-01-03"]}),
        "events.csv",
        S.TIMESTAMP,
        "not timestamps",
    ),
    "no timestamp at all": (events_frame(**{S.TIMESTAMP: ["noon", "dusk", "dawn", "never"]}), "events.csv", S.TIMESTAMP, "not timestamps"),
    "null timestamp": (
        events_frame(**{S.TIMESTAMP: [dt.datetime(2026, 1, 1), None, dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 3)]}),
        "events.parquet",
        S.TIMESTAMP,
        "null timestamp",
    ),
    "nan epoch": (
        events_frame(**{S.TIMESTAMP: [1.7e9, float("nan"), 1.7e9, 1.7e9]}),
        "events.parquet",
        S.TIMESTAMP,
        "epoch seconds outside",
    ),
    "epoch nanoseconds": (
        events_frame(**{S.TIMESTAMP: [1_767_261_600_000_000_000] * 4}),
        "events.parquet",
        S.TIMESTAMP,
        "outside years 1-9999",
    ),
    "epoch milliseconds": (events_frame(**{S.TIMESTAMP: [1_767_261_600_000] * 4}), "events.parquet", S.TIMESTAMP, "outside years 1-9999"),
    "string ids vs int catalog": (events_frame(**{S.ITEM_ID: ["a", "b", "c", "d"]}), "events.parquet", S.ITEM_ID, "items.item_id is Int64"),
    "huge position": (events_frame(**{S.POSITION: [1, 2, 2**40, 3]}), "events.parquet", S.POSITION, "32-bit"),
    "every event unknown": (events_frame(**{S.ITEM_ID: [7, 8, 9, 7]}), "events.parquet", S.ITEM_ID, "no event refers to an item"),
    "empty file": (f"{S.USER_ID},{S.ITEM_ID},{S.EVENT},{S.TIMESTAMP}\n".encode(), "events.csv", None, "no rows"),
    "not parquet": (b"user_id,item_id\n1,2\n", "events.parquet", None, "cannot be read as parquet"),
}


def _assert_refused(result, path: Path, column: str | None, message: str, out_dir: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    assert str(path) in lines[0] and message in lines[0], lines[0]
    if column:
        assert f"'{column}'" in lines[0], lines[0]
    assert [p.name for p in out_dir.iterdir()] == [], "nothing is written at the destination, no temp files either"


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_bad_items_refused_by_score(case, tmp_path, exported_model, tiny_shop):
    content, name, column, message = BAD_ITEMS[case]
    path = _write(content, tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "score",
        "--model",
        exported_model,
        "--items",
        path,
        "--events",
        tiny_shop / "events",
        "--out",
        out / "recs.parquet",
        "--device",
        "cpu",
        "--no-cache",
    )
    _assert_refused(result, path, column, message, out)


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_events_refused_by_score(case, tmp_path, exported_model):
    items = _write(items_frame(), tmp_path / "items.parquet")
    content, name, column, message = BAD_EVENTS[case]
    path = _write(content, tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "score",
        "--model",
        exported_model,
        "--items",
        items,
        "--events",
        path,
        "--out",
        out / "recs.parquet",
        "--device",
        "cpu",
        "--no-cache",
    )
    _assert_refused(result, path, column, message, out)


@pytest.mark.parametrize("case", ["missing title", "duplicate ids", "not parquet"])
def test_bad_items_refused_by_train_and_retrain(case, tmp_path, tiny_shop, trained_model, tiny_config_file):
    content, name, column, message = BAD_ITEMS[case]
    path = _write(content, tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    result = run("train", "--items", path, "--events", tiny_shop / "events", "--out", out / "model", "--config", tiny_config_file)
    _assert_refused(result, path, column, message, out)
    result = run("retrain", "--model", trained_model, "--items", path, "--events", tiny_shop / "events", "--out", out / "model")
    _assert_refused(result, path, column, message, out)
    result = run("train", "--items", path, "--events", tiny_shop / "events", "--registry", out / "registry", "--config", tiny_config_file)
    _assert_refused(result, path, column, message, out)
    result = run("retrain", "--model", trained_model, "--items", path, "--events", tiny_shop / "events", "--registry", out / "registry")
    _assert_refused(result, path, column, message, out)


def test_a_bad_daily_file_in_a_directory_is_named(tmp_path, tiny_shop, exported_model):
    events = tmp_path / "events"
    events.mkdir()
    for day in sorted((tiny_shop / "events").iterdir())[:3]:
        (events / day.name).write_bytes(day.read_bytes())
    bad = events / "2026-01-04.parquet"
    bad.write_bytes(b"truncated")
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "score",
        "--model",
        exported_model,
        "--items",
        tiny_shop / "items.parquet",
        "--events",
        events,
        "--out",
        out / "recs.parquet",
        "--device",
        "cpu",
        "--no-cache",
    )
    _assert_refused(result, bad, None, "cannot be read as parquet", out)


# --- recoverable problems: dropped or repaired, counted, warned about -------------------------------------


def test_recoverable_problems_are_counted_and_warned(tmp_path):
    items = items_frame(
        **{S.ITEM_ID: [1, 2, 3, 4], S.TITLE: ["red shoes", "", None, " \u200b\t"], S.CATEGORY: ["shoes", "hats", None, None]}
    )
    items.write_parquet(tmp_path / "items.parquet")
    events = events_frame()
    extra = pl.DataFrame(
        {
            S.USER_ID: [10, 10, 13, 13],
            S.ITEM_ID: [1, 99, 98, 2],
            S.EVENT: ["click", "click", "click", "click"],
            S.TIMESTAMP: [dt.datetime(2026, 1, 1, 10), dt.datetime(2026, 1, 5), dt.datetime(2026, 1, 5), dt.datetime(2027, 1, 1)],
        }
    )
    pl.concat([events, extra]).write_parquet(tmp_path / "events.parquet")
    data = load_dataset(tmp_path / "items.parquet", tmp_path / "events.parquet", now=NOW)
    assert data.report.dropped == {"duplicate_event": 1, "future_timestamp": 1, "unknown_item": 2}
    assert data.report.repaired == {"empty_text_item": 3}
    titles = dict(data.items.select(S.ITEM_ID, S.TITLE).collect().iter_rows())
    assert titles == {1: "red shoes", 2: "hats", 3: "3", 4: "4"}
    assert data.events.collect().height == 4
    assert len(data.report.warnings) == 4
    assert all(str(tmp_path) in line for line in data.report.warnings)
    assert any("2 event(s) of items not in the catalog" in line and "99" in line for line in data.report.warnings)


def test_recoverable_counts_reach_the_manifests(tmp_path, tiny_shop, exported_model, tiny_config_file):
    items = pl.read_parquet(tiny_shop / "items.parquet")
    first_three = pl.int_range(pl.len()) < 3
    items = items.with_columns(
        pl.when(first_three).then(pl.lit("")).otherwise(pl.col(S.TITLE)).alias(S.TITLE),
        pl.when(first_three).then(None).otherwise(pl.col(S.DESCRIPTION)).alias(S.DESCRIPTION),
    )
    items.write_parquet(tmp_path / "items.parquet")
    events = pl.read_parquet(tiny_shop / "events")
    late = events.head(2).with_columns(pl.lit(dt.datetime(2099, 1, 1)).alias(S.TIMESTAMP))
    pl.concat([events, events.head(3), late]).write_parquet(tmp_path / "events.parquet")
    result = run(
        "score",
        "--model",
        exported_model,
        "--items",
        tmp_path / "items.parquet",
        "--events",
        tmp_path / "events.parquet",
        "--out",
        tmp_path / "recs.parquet",
        "--k",
        3,
        "--device",
        "cpu",
        "--no-cache",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "recs.manifest.json").read_text())
    assert manifest["dropped_rows"] == {"duplicate_event": 3, "future_timestamp": 2}
    assert manifest["repaired_rows"] == {"empty_text_item": 3}
    assert "dropped 3 exact duplicate event(s)" in result.output and "2 event(s) dated after now" in result.output
    result = run(
        "train",
        "--items",
        tmp_path / "items.parquet",
        "--events",
        tmp_path / "events.parquet",
        "--out",
        tmp_path / "model",
        "--config",
        tiny_config_file,
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["dropped_rows"] == {"duplicate_event": 3, "future_timestamp": 2}
    assert manifest["repaired_rows"] == {"empty_text_item": 3}


def test_odd_and_huge_text_is_scored(tmp_path, tiny_shop, exported_model):
    items = pl.read_parquet(tiny_shop / "items.parquet")
    odd = [
        "🎉🔥 party pack 👟" * 3,
        "control\x00chars\x07and\x1bescapes\r\n\ttabs",
        "كتاب عربي جميل \u202eright-to-left override\u202c",
        "שלום עולם",
        "x" * 100_000,
        "Ünïcödé — ﬁligree 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    ]
    descriptions = items[S.DESCRIPTION].to_list()
    for i, text in enumerate(odd):
        descriptions[i] = text
    items = items.with_columns(pl.Series(S.DESCRIPTION, descriptions), pl.Series(S.TITLE, [*odd, *items[S.TITLE].to_list()[len(odd) :]]))
    items.write_csv(tmp_path / "items.csv")
    result = run(
        "score",
        "--model",
        exported_model,
        "--items",
        tmp_path / "items.csv",
        "--events",
        tiny_shop / "events",
        "--out",
        tmp_path / "recs.parquet",
        "--k",
        5,
        "--device",
        "cpu",
        "--no-cache",
    )
    assert result.exit_code == 0, result.output
    recs = pl.read_parquet(tmp_path / "recs.parquet")
    assert recs[S.SCORE].is_finite().all() and recs.height > 0


def test_timezone_aware_timestamps_become_naive_utc():
    events = events_frame(**{S.TIMESTAMP: pl.Series([dt.datetime(2026, 1, 1, 12)] * 4).dt.replace_time_zone("Europe/Berlin")})
    out = validate_events(events, now=NOW)
    assert out[S.TIMESTAMP].to_list()[0] == dt.datetime(2026, 1, 1, 11)
    strings = events_frame(**{S.TIMESTAMP: ["2026-01-01T12:00:00+02:00"] * 4})
    assert validate_events(strings, now=NOW)[S.TIMESTAMP].to_list()[0] == dt.datetime(2026, 1, 1, 10)


# --- properties: random schemas and values give a clean result or a clean error ---------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
VALUE_STRATEGIES = {
    "int": (pl.Int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    "small int": (pl.Int64, st.integers(min_value=-3, max_value=5)),
    "int32": (pl.Int32, st.integers(min_value=-(2**31), max_value=2**31 - 1)),
    "float": (pl.Float64, st.floats(allow_nan=True, allow_infinity=True)),
    "epoch": (pl.Float64, st.floats(min_value=0, max_value=2e9)),
    "text": (pl.String, TEXT),
    "event": (pl.String, st.sampled_from(["click", "purchase", "impression", " Click ", "PURCHASE"])),
    "date text": (
        pl.String,
        st.sampled_from(["2026-01-01", "2026-01-02 10:00:00", "2026-01-03T00:00:00+02:00", "1/2/2026", "noon", "1e9"]),
    ),
    "datetime": (pl.Datetime("us"), st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))),
    "datetime ms": (pl.Datetime("ms"), st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1))),
    "datetime tz": (
        pl.Datetime("ns", "America/New_York"),
        st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    ),
    "date": (pl.Date, st.dates()),
    "bool": (pl.Boolean, st.booleans()),
    "list": (pl.List(pl.Int64), st.lists(st.integers(min_value=0, max_value=9), max_size=2)),
    "null": (pl.Null, st.none()),
}
VALUE_STRATEGIES["id"] = (pl.Int64, st.integers(min_value=0, max_value=4))
VALUE_STRATEGIES["text id"] = (pl.String, st.sampled_from(["0", "1", "a", "ü", "😀", " "]))
# column -> value kinds that fit it (drawn most of the time); any other kind is drawn otherwise
PLAUSIBLE = {
    S.ITEM_ID: ["id", "text id"],
    S.USER_ID: ["id", "text id"],
    S.TITLE: ["text"],
    S.DESCRIPTION: ["text"],
    S.CATEGORY: ["text"],
    S.DOMAIN: ["text"],
    S.PRICE: ["float"],
    S.CREATED_AT: ["datetime", "date", "date text", "epoch"],
    S.EVENT: ["event"],
    S.TIMESTAMP: ["datetime", "datetime ms", "datetime tz", "date", "date text", "epoch", "int"],
    S.SESSION_ID: ["text", "small int"],
    S.POSITION: ["small int", "int32"],
    "extra": sorted(VALUE_STRATEGIES),
}
REQUIRED = {*S.ITEM_REQUIRED, *S.EVENT_REQUIRED}
ITEM_COLUMNS = [*S.ITEM_REQUIRED, *S.ITEM_OPTIONAL, "extra"]
EVENT_COLUMNS = [*S.EVENT_REQUIRED, *S.EVENT_OPTIONAL, "extra"]


@st.composite
def frames(draw, columns: list[str]):
    """A frame with most contract columns (sometimes one missing), mostly plausible types, wild values."""
    n = draw(st.integers(min_value=0, max_value=6))
    data = {}
    for name in columns:
        if draw(st.integers(0, 19)) == 13 if name in REQUIRED else draw(st.booleans()):
            continue  # required columns go missing 1 time in 20
        kinds = sorted(VALUE_STRATEGIES) if draw(st.integers(0, 9)) == 7 else PLAUSIBLE[name]
        dtype, values = VALUE_STRATEGIES[draw(st.sampled_from(kinds))]
        nullable = draw(st.integers(0, 7)) == 5
        cells = draw(st.lists(st.one_of(st.none(), values) if nullable else values, min_size=n, max_size=n))
        data[name] = pl.Series(name, cells, dtype=dtype)
    return pl.DataFrame(data, height=n) if data else pl.DataFrame({"extra": [None] * n})


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPERTY
@given(frames(ITEM_COLUMNS))
def test_validate_items_gives_a_result_or_a_schema_error(frame):
    try:
        items = validate_items(frame, "items.parquet")
    except SchemaError as exc:
        assert "items.parquet" in str(exc) and "\n" not in str(exc).strip()
        return
    assert items.columns == [S.ITEM_ID, S.TITLE, S.DESCRIPTION, S.CATEGORY, S.DOMAIN, S.PRICE, S.CREATED_AT]
    assert items.height == frame.height and items[S.ITEM_ID].null_count() == 0


@PROPERTY
@given(frames(EVENT_COLUMNS), st.sampled_from([None, pl.Int64, pl.String]))
def test_validate_events_gives_a_result_or_a_schema_error(frame, item_dtype):
    try:
        events = validate_events(frame, "events.csv", item_id_dtype=item_dtype, now=NOW)
    except SchemaError as exc:
        assert "events.csv" in str(exc)
        return
    assert events.columns == [S.USER_ID, S.ITEM_ID, S.EVENT, S.TIMESTAMP, S.SESSION_ID, S.POSITION]
    assert events.schema[S.TIMESTAMP] == pl.Datetime(S.TIME_UNIT)
    assert events[S.EVENT].is_in(list(S.EVENT_TYPES)).all() and (events[S.TIMESTAMP] <= NOW).all()
    assert 0 < events.height <= frame.height


ids = st.one_of(st.integers(min_value=0, max_value=4), st.sampled_from(["a", "b", "ü", "😀"]))


@st.composite
def datasets(draw):
    """Items and events that may pass validation: sane column names, wild values."""
    as_text = draw(st.booleans())
    item_ids = draw(st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=5, unique=True))
    item_ids = [str(i) for i in item_ids] if as_text else item_ids
    n_items = len(item_ids)
    items = {
        S.ITEM_ID: item_ids,
        S.TITLE: draw(st.lists(st.one_of(st.none(), TEXT), min_size=n_items, max_size=n_items)),
        S.CATEGORY: draw(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", ""])), min_size=n_items, max_size=n_items)),
        S.PRICE: draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n_items, max_size=n_items)),
        S.CREATED_AT: draw(
            st.lists(
                st.one_of(st.none(), st.datetimes(min_value=dt.datetime(2025, 12, 20), max_value=dt.datetime(2026, 1, 20))),
                min_size=n_items,
                max_size=n_items,
            )
        ),
    }
    n = draw(st.integers(min_value=1, max_value=12))
    pool = [*item_ids, *(["zz"] if as_text else [99])]
    events = {
        S.USER_ID: draw(st.lists(ids, min_size=n, max_size=n).map(lambda v: [str(x) for x in v])),
        S.ITEM_ID: draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)),
        S.EVENT: draw(st.lists(st.sampled_from(["click", "purchase", "impression"]), min_size=n, max_size=n)),
        S.TIMESTAMP: draw(
            st.lists(st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 1, 12)), min_size=n, max_size=n)
        ),
    }
    return pl.DataFrame(items, strict=False), pl.DataFrame(events, strict=False)


@PROPERTY
@given(datasets(), st.datetimes(min_value=dt.datetime(2025, 12, 31), max_value=dt.datetime(2026, 1, 14)))
def test_features_of_validated_data_never_fail(dataset, cutoff):
    raw_items, raw_events = dataset
    report = LoadReport()
    try:
        items = validate_items(raw_items, "items.parquet", report=report)
        events = validate_events(raw_events, "events.parquet", item_id_dtype=items.schema[S.ITEM_ID], report=report, now=NOW)
    except SchemaError:
        return
    events = events.filter(pl.col(S.ITEM_ID).is_in(items[S.ITEM_ID].implode())).lazy()
    users = features.user_features(events, cutoff=cutoff).collect()
    assert users[S.USER_ID].is_unique().all()
    pairs = events.select(S.USER_ID).unique().join(items.lazy().select(S.ITEM_ID), how="cross")
    out = features.pair_features(pairs, events, items.lazy(), cutoff=cutoff).collect()
    assert out.height == pairs.collect().height
    assert set(features.FEATURE_COLUMNS) <= set(out.columns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200), st.sampled_from(["x.csv", "x.parquet", "x.pq"]))
def test_any_bytes_in_a_file_give_a_table_or_a_schema_error(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    try:
        frame = read_table(path)
        validate_items(frame, path)
    except SchemaError as exc:
        assert str(path) in str(exc)
