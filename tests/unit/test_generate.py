"""The synthetic shop: contracts, determinism, funnel, cold start, rates, ground truth, and that text carries the signal."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.contracts import schema as S
from recsys.contracts.errors import ConfigError
from recsys.contracts.files import read_json
from recsys.data import load_dataset, read_table, validate_events, validate_items
from recsys.generate import generate_shop, true_probabilities

SMALL = {"users": 200, "items": 150, "days": 5, "new_items_per_day": 10}
START = dt.datetime(2026, 1, 1)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shop")
    return out, generate_shop(out, seed=7, **SMALL)


@pytest.fixture(scope="module")
def events(shop) -> pl.DataFrame:
    return read_table(shop[0] / "events")


@pytest.fixture(scope="module")
def items(shop) -> pl.DataFrame:
    return pl.read_parquet(shop[0] / "items.parquet")


def test_layout_and_dtypes(shop, items, events):
    out, summary = shop
    assert (out / "items.parquet").is_file()
    days = sorted(p.name for p in (out / "events").iterdir())
    assert days == [f"2026-01-0{d}.parquet" for d in range(1, 6)]
    assert sorted(p.name for p in (out / "truth").iterdir()) == ["items.parquet", "params.json", "users.parquet"]
    assert items.schema == pl.Schema(
        {
            S.ITEM_ID: pl.Int64,
            S.TITLE: pl.String,
            S.DESCRIPTION: pl.String,
            S.CATEGORY: pl.String,
            S.DOMAIN: pl.String,
            S.PRICE: pl.Float64,
            S.CREATED_AT: pl.Datetime("us"),
        }
    )
    assert events.schema == pl.Schema(
        {
            S.USER_ID: pl.Int64,
            S.ITEM_ID: pl.Int64,
            S.EVENT: pl.String,
            S.TIMESTAMP: pl.Datetime("us"),
            S.SESSION_ID: pl.String,
            S.POSITION: pl.Int32,
        }
    )
    for path in (out / "events").iterdir():  # each daily file holds that day's events only
        day = dt.date.fromisoformat(path.stem)
        dates = pl.read_parquet(path)[S.TIMESTAMP].dt.date().unique().to_list()
        assert dates == [day]
    assert items.height == SMALL["items"] + SMALL["new_items_per_day"] * SMALL["days"] == summary["items"]
    assert items[S.DOMAIN].n_unique() >= 5 and items[S.CATEGORY].n_unique() >= 20
    assert items[S.TITLE].str.len_chars().min() > 10 and items[S.DESCRIPTION].str.len_chars().min() > 30
    assert (items[S.PRICE] > 0).all()


def test_outputs_pass_the_contract(shop, items, events):
    out, _ = shop
    assert validate_items(items).height == items.height
    assert validate_events(events, item_id_dtype=pl.Int64).height == events.height  # no duplicate rows
    dataset = load_dataset(out / "items.parquet", out / "events")
    assert dataset.report.dropped == {}
    assert set(events[S.EVENT].unique()) == set(S.EVENT_TYPES)


def test_summary_matches_the_files(shop, events):
    _, summary = shop
    counts = dict(events.group_by(S.EVENT).len().iter_rows())
    assert summary["events"] == counts
    assert summary["sessions"] == events[S.SESSION_ID].n_unique()
    assert summary["ctr"] == pytest.approx(counts[S.CLICK] / counts[S.IMPRESSION])


def test_same_seed_same_bytes_other_seed_differs(shop, tmp_path):
    out, _ = shop
    generate_shop(tmp_path / "again", seed=7, **SMALL)
    generate_shop(tmp_path / "other", seed=8, **SMALL)
    first, again, other = _hashes(out), _hashes(tmp_path / "again"), _hashes(tmp_path / "other")
    assert first == again
    assert set(first) == set(other)
    assert all(first[name] != other[name] for name in first)


def test_rerun_replaces_the_event_folder(tmp_path):
    generate_shop(tmp_path, users=30, items=40, days=3, seed=1)
    generate_shop(tmp_path, users=30, items=40, days=2, seed=1)
    assert len(list((tmp_path / "events").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_tiny_shop_still_loads(tmp_path):
    summary = generate_shop(tmp_path, users=2, items=5, days=6, new_items_per_day=1, seed=1)
    files = list((tmp_path / "events").iterdir())
    assert 0 < summary["sessions"] == len(files) < 6  # quiet days leave no (empty, unloadable) file
    assert load_dataset(tmp_path / "items.parquet", tmp_path / "events").events.collect().height == sum(summary["events"].values())


def test_funnel_impression_click_purchase(events):
    keys = [S.USER_ID, S.ITEM_ID, S.SESSION_ID]
    imp = events.filter(pl.col(S.EVENT) == S.IMPRESSION).select(
        *keys, pl.col(S.TIMESTAMP).alias("imp_ts"), pl.col(S.POSITION).alias("imp_pos")
    )
    clicks = events.filter(pl.col(S.EVENT) == S.CLICK)
    buys = events.filter(pl.col(S.EVENT) == S.PURCHASE)
    assert imp.select(keys).is_duplicated().sum() == 0  # an item appears at most once per slate
    c = clicks.join(imp, on=keys, how="left")
    assert c["imp_ts"].null_count() == 0 and (c["imp_ts"] < c[S.TIMESTAMP]).all()
    assert (c["imp_pos"] == c[S.POSITION]).all()
    b = buys.join(clicks.select(*keys, pl.col(S.TIMESTAMP).alias("click_ts")), on=keys, how="left")
    assert b["click_ts"].null_count() == 0 and (b["click_ts"] < b[S.TIMESTAMP]).all()
    delay = (b[S.TIMESTAMP] - b["click_ts"]).dt.total_seconds()
    assert delay.min() >= 1 and delay.max() <= 3600


def test_slates_and_sessions(events):
    imp = events.filter(pl.col(S.EVENT) == S.IMPRESSION)
    slates = imp.group_by(S.SESSION_ID).agg(
        pl.len().alias("n"),
        pl.col(S.POSITION).min().alias("lo"),
        pl.col(S.POSITION).max().alias("hi"),
        pl.col(S.USER_ID).n_unique().alias("users"),
    )
    assert slates["n"].min() >= 6 and slates["n"].max() <= 12
    assert (slates["lo"] == 1).all() and (slates["hi"] == slates["n"]).all() and (slates["users"] == 1).all()
    per_user = imp.group_by(S.USER_ID).agg(pl.col(S.SESSION_ID).n_unique().alias("sessions"))["sessions"]
    assert per_user.max() > 2 * per_user.median()  # activity differs between users


def test_items_are_shown_only_after_they_exist(items, events):
    joined = events.join(items.select(S.ITEM_ID, S.CREATED_AT), on=S.ITEM_ID, how="left")
    assert joined[S.CREATED_AT].null_count() == 0
    assert (joined[S.CREATED_AT] < joined[S.TIMESTAMP]).all()


def test_cold_start_items_arrive_every_day_including_the_last(items, events):
    new = items.filter(pl.col(S.CREATED_AT) >= START)
    assert new.height == SMALL["new_items_per_day"] * SMALL["days"]
    assert (items.filter(pl.col(S.CREATED_AT) < START).height) == SMALL["items"]
    per_day = new.group_by(pl.col(S.CREATED_AT).dt.date()).len()
    assert per_day.height == SMALL["days"] and (per_day["len"] == SMALL["new_items_per_day"]).all()
    last_day = START + dt.timedelta(days=SMALL["days"] - 1)
    fresh = new.filter(pl.col(S.CREATED_AT) >= last_day)[S.ITEM_ID]
    shown_last_day = events.filter((pl.col(S.TIMESTAMP) >= last_day) & pl.col(S.ITEM_ID).is_in(fresh.implode()))
    assert shown_last_day.height > 0  # items born on the last day are already being shown that day


def test_rates_are_plausible(shop):
    _, summary = shop
    assert 0.04 <= summary["ctr"] <= 0.14
    assert 0.12 <= summary["purchases_per_click"] <= 0.40


def test_position_bias(events):
    imp = events.filter(pl.col(S.EVENT) == S.IMPRESSION).group_by(S.POSITION).len()
    clk = events.filter(pl.col(S.EVENT) == S.CLICK).group_by(S.POSITION).len()
    rate = imp.join(clk, on=S.POSITION, suffix="_c").with_columns((pl.col("len_c") / pl.col("len")).alias("ctr")).sort(S.POSITION)
    assert rate["ctr"][0] > 1.5 * rate.filter(pl.col(S.POSITION) >= 6)["len_c"].sum() / rate.filter(pl.col(S.POSITION) >= 6)["len"].sum()


def test_true_probabilities_are_probabilities(shop, items):
    out, _ = shop
    users = pl.read_parquet(out / "truth" / "users.parquet")[S.USER_ID].to_numpy()
    item_ids = items[S.ITEM_ID].to_numpy()
    p_click, p_buy = true_probabilities(out / "truth", users[:, None], item_ids[None, :], START + dt.timedelta(days=2))
    assert p_click.shape == p_buy.shape == (len(users), len(item_ids))
    assert np.isfinite(p_click).all() and np.isfinite(p_buy).all()
    assert (p_click >= 0).all() and (p_click <= 1).all() and (p_buy >= 0).all()
    assert (p_buy <= p_click).all()
    assert p_click.std() > 0.05  # users really differ in what they like
    pairs_click, pairs_buy = true_probabilities(out / "truth", users[:5], item_ids[:5], "2026-01-03T00:00:00")
    assert np.allclose(pairs_click, np.diagonal(p_click[:5, :5]), rtol=1e-12) and np.allclose(
        pairs_buy, np.diagonal(p_buy[:5, :5]), rtol=1e-12
    )
    with pytest.raises(KeyError):
        true_probabilities(out / "truth", [10**9], [item_ids[0]], START)


def test_interest_drifts_over_the_period(shop, items):
    out, _ = shop
    users = pl.read_parquet(out / "truth" / "users.parquet")
    first, _ = true_probabilities(out / "truth", users[S.USER_ID].to_numpy()[:, None], items[S.ITEM_ID].to_numpy()[None, :], START)
    last, _ = true_probabilities(
        out / "truth", users[S.USER_ID].to_numpy()[:, None], items[S.ITEM_ID].to_numpy()[None, :], START + dt.timedelta(days=5)
    )
    later, _ = true_probabilities(
        out / "truth", users[S.USER_ID].to_numpy()[:, None], items[S.ITEM_ID].to_numpy()[None, :], START + dt.timedelta(days=50)
    )
    assert 0 < np.abs(first - last).mean() < 0.1  # slow
    assert np.array_equal(last, later)  # interest stops moving at the end of the period
    u0 = np.stack(users["u_start"].to_list())
    u1 = np.stack(users["u_end"].to_list())
    assert np.allclose(np.linalg.norm(u0, axis=1), 1) and np.allclose(np.linalg.norm(u1, axis=1), 1)


def test_clicks_and_purchases_follow_the_true_probabilities(shop, events):
    """The log is drawn from exactly the formula true_probabilities evaluates (times position bias)."""
    out, _ = shop
    eta = read_json(out / "truth" / "params.json")["eta"]
    imp = events.filter(pl.col(S.EVENT) == S.IMPRESSION)
    keys = [S.USER_ID, S.ITEM_ID, S.SESSION_ID]
    clicked = imp.join(events.filter(pl.col(S.EVENT) == S.CLICK).select(keys).with_columns(pl.lit(True).alias("c")), on=keys, how="left")
    expected_click = np.empty(imp.height)
    expected_buy = np.empty(imp.height)
    for day, part in clicked.with_row_index().group_by(pl.col(S.TIMESTAMP).dt.date()):  # true_probabilities takes one time
        noon = dt.datetime.combine(day[0], dt.time(12))
        pc, pb = true_probabilities(out / "truth", part[S.USER_ID].to_numpy(), part[S.ITEM_ID].to_numpy(), noon)
        bias = part[S.POSITION].to_numpy().astype(float) ** -eta
        expected_click[part["index"].to_numpy()] = bias * pc
        expected_buy[part["index"].to_numpy()] = bias * pb
    observed_click = clicked["c"].fill_null(False).sum()
    observed_buy = events.filter(pl.col(S.EVENT) == S.PURCHASE).height
    for observed, p in ((observed_click, expected_click), (observed_buy, expected_buy)):
        sd = np.sqrt((p * (1 - p)).sum())
        assert abs(observed - p.sum()) < 4 * sd + 0.01 * p.sum()


def test_same_category_items_share_title_words(items):
    words = [set(re.findall(r"[a-z][a-z'-]+", t.lower())) for t in items[S.TITLE].to_list()]
    cats = items[S.CATEGORY].to_numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(words), 4000), rng.integers(0, len(words), 4000)
    keep = a != b
    jac = np.array([len(words[i] & words[j]) / len(words[i] | words[j]) for i, j in zip(a[keep], b[keep])])
    same = cats[a[keep]] == cats[b[keep]]
    assert jac[same].mean() > 2 * jac[~same].mean()


def test_text_predicts_the_item_factors(tmp_path):
    """A bag of words of title + description linearly predicts the latent factors on unseen items."""
    generate_shop(tmp_path, users=5, items=1500, days=1, new_items_per_day=0, seed=3)
    items = pl.read_parquet(tmp_path / "items.parquet")
    factors = np.stack(pl.read_parquet(tmp_path / "truth" / "items.parquet")["factors"].to_list())
    docs = (items[S.TITLE] + " " + items[S.DESCRIPTION]).str.to_lowercase().to_list()
    tokens = [set(re.findall(r"[a-z0-9][a-z0-9'-]*", d)) for d in docs]
    vocab = {w: k for k, w in enumerate(sorted(set().union(*tokens)))}
    x = np.zeros((len(docs), len(vocab) + 1))
    x[:, -1] = 1
    for i, t in enumerate(tokens):
        x[i, [vocab[w] for w in t]] = 1
    train, test = slice(0, 1200), slice(1200, None)
    coef = np.linalg.solve(x[train].T @ x[train] + np.eye(x.shape[1]), x[train].T @ factors[train])  # ridge
    residual = ((x[test] @ coef - factors[test]) ** 2).sum()
    total = ((factors[test] - factors[train].mean(axis=0)) ** 2).sum()
    assert 1 - residual / total > 0.8


def test_users_prefer_their_top_category(shop, items):
    out, _ = shop
    users = pl.read_parquet(out / "truth" / "users.parquet")
    p, _ = true_probabilities(out / "truth", users[S.USER_ID].to_numpy()[:, None], items[S.ITEM_ID].to_numpy()[None, :], START)
    same = users["top_category"].to_numpy()[:, None] == items[S.CATEGORY].to_numpy()[None, :]
    has = same.any(axis=1)
    top = np.array([p[u, same[u]].mean() for u in np.flatnonzero(has)])
    rest = np.array([p[u, ~same[u]].mean() for u in np.flatnonzero(has)])
    assert top.mean() > 2 * rest.mean()
    assert (top > rest).mean() > 0.9


def test_bad_arguments_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="users"):
        generate_shop(tmp_path, users=0)
    with pytest.raises(ConfigError, match="start"):
        generate_shop(tmp_path, start="yesterday")
    assert not (tmp_path / "events").exists()


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = "import sys, recsys.generate, recsys.movielens; assert 'torch' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
