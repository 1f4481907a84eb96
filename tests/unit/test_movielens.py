"""MovieLens-100k loader: both file formats map to the same contract frames; bad files name the file and column."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from recsys.contracts import schema as S
from recsys.contracts.errors import SchemaError
from recsys.data import load_dataset, validate_events, validate_items
from recsys.movielens import GENRES, convert_movielens, load_movielens

# (id, title, year or None, genres); a tiny stand-in for the real data, which is never committed
MOVIES = [
    (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    (2, "GoldenEye", 1995, ["Action", "Adventure", "Thriller"]),
    (3, "Misérables, Les", 1995, ["Drama", "Musical"]),
    (4, "unknown", None, ["unknown"]),
    (5, "Blade Runner", 1982, ["Film-Noir", "Sci-Fi"]),
]
# (user, item, rating, epoch seconds)
RATINGS = [
    (196, 1, 3, 881250949),
    (196, 5, 5, 881251000),
    (186, 2, 4, 891717742),
    (186, 3, 1, 891717800),
    (22, 1, 5, 878887116),
    (22, 4, 2, 878887200),
    (22, 5, 4, 878887300),
]
CLICKS = len(RATINGS)
PURCHASES = sum(r >= 4 for _, _, r, _ in RATINGS)


def _write_grouplens(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for movie_id, title, year, genres in MOVIES:
        flags = ["1" if g in genres else "0" for g in GENRES]
        full = f"{title} ({year})" if year else title
        date = f"01-Jan-{year}" if year else ""
        lines.append("|".join([str(movie_id), full, date, "", "http://us.imdb.com/M/title-exact?x", *flags]))
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (root / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    return root


def _write_recbole(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    item_lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    item_lines += [f"{i}\t{title}\t{year if year else 'unkonwn'}\t{' '.join(genres)}" for i, title, year, genres in MOVIES]
    (root / "ml-100k.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"] + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS]
    (root / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    return root


@pytest.fixture(params=["grouplens", "recbole"])
def source(request, tmp_path) -> Path:
    return (_write_grouplens if request.param == "grouplens" else _write_recbole)(tmp_path / request.param)


def test_items_mapping(source):
    items, _ = load_movielens(source)
    assert validate_items(items).equals(items)
    assert items[S.ITEM_ID].dtype == pl.Int64 and items.height == len(MOVIES)
    rows = {row[S.ITEM_ID]: row for row in items.iter_rows(named=True)}
    toy = rows[1]
    assert toy[S.TITLE] == "Toy Story"  # the year moves from the title into the description
    assert toy[S.DESCRIPTION] == "Year: 1995. Genres: Animation, Children's, Comedy."
    assert toy[S.CATEGORY] == "Animation" and toy[S.DOMAIN] == "movies"
    assert toy[S.CREATED_AT] == dt.datetime(1995, 1, 1)
    assert rows[3][S.TITLE] == "Misérables, Les"  # latin-1 in u.item, utf-8 in the RecBole file
    assert rows[5][S.DESCRIPTION] == "Year: 1982. Genres: Film-Noir, Sci-Fi." and rows[5][S.CATEGORY] == "Film-Noir"
    assert rows[4][S.CREATED_AT] is None and rows[4][S.CATEGORY] == S.UNKNOWN
    assert rows[4][S.DESCRIPTION] == "Genres: unknown."


def test_events_mapping(source):
    _, events = load_movielens(source)
    assert validate_events(events, item_id_dtype=pl.Int64).height == events.height
    counts = dict(events.group_by(S.EVENT).len().iter_rows())
    assert counts == {S.CLICK: CLICKS, S.PURCHASE: PURCHASES}
    assert events[S.TIMESTAMP].is_sorted()
    clicks = events.filter(pl.col(S.EVENT) == S.CLICK)
    first = clicks.filter((pl.col(S.USER_ID) == 196) & (pl.col(S.ITEM_ID) == 1))
    assert first[S.TIMESTAMP].to_list() == [dt.datetime(1997, 12, 4, 15, 55, 49)]  # 881250949 UTC
    buys = events.filter(pl.col(S.EVENT) == S.PURCHASE).join(clicks, on=[S.USER_ID, S.ITEM_ID], suffix="_click")
    assert buys.height == PURCHASES
    assert ((buys[S.TIMESTAMP] - buys[f"{S.TIMESTAMP}_click"]) == dt.timedelta(seconds=1)).all()
    bought = set(zip(buys[S.USER_ID], buys[S.ITEM_ID]))
    assert bought == {(u, i) for u, i, r, _ in RATINGS if r >= 4}


def test_both_formats_agree(tmp_path):
    gl_items, gl_events = load_movielens(_write_grouplens(tmp_path / "gl"))
    rb_items, rb_events = load_movielens(_write_recbole(tmp_path / "rb"))
    assert gl_items.drop(S.CREATED_AT).equals(rb_items.drop(S.CREATED_AT))
    assert gl_events.equals(rb_events)


def test_convert_writes_loadable_files(source, tmp_path):
    out = tmp_path / "converted"
    summary = convert_movielens(source, out)
    assert summary["items"] == len(MOVIES) and summary["users"] == 3
    assert summary["events"] == {S.CLICK: CLICKS, S.PURCHASE: PURCHASES}
    assert sorted(p.name for p in out.iterdir()) == ["events.parquet", "items.parquet"]  # no temporary leftovers
    dataset = load_dataset(out / "items.parquet", out / "events.parquet")
    assert dataset.report.dropped == {}
    assert dataset.events.collect().height == CLICKS + PURCHASES


def test_finds_the_unpacked_archive_folder(tmp_path):
    _write_grouplens(tmp_path / "ml-100k")
    items, _ = load_movielens(tmp_path)
    assert items.height == len(MOVIES)


def _expect(path: Path, file: str, column: str | None, match: str) -> None:
    with pytest.raises(SchemaError, match=match) as info:
        load_movielens(path)
    assert Path(info.value.path).name == file
    assert info.value.column == column


def test_missing_files(tmp_path):
    _expect(tmp_path / "nowhere", "nowhere", None, "does not exist")
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "empty", None, "u.data")
    root = _write_grouplens(tmp_path / "gl")
    (root / "u.item").unlink()
    _expect(root, "u.item", None, "missing")
    root = _write_recbole(tmp_path / "rb")
    (root / "ml-100k.item").unlink()
    _expect(root, "ml-100k.item", None, "missing")


def test_garbled_grouplens_files(tmp_path):
    root = _write_grouplens(tmp_path / "a")
    (root / "u.data").write_text("196\t1\tthree\t881250949\n")
    _expect(root, "u.data", "rating", "not numbers")
    (root / "u.data").write_text("196\t1\t3\n")
    _expect(root, "u.data", "timestamp", "3 field")
    (root / "u.data").write_text("196\tone\t3\t881250949\n")
    _expect(root, "u.data", "item id", "not integer")
    root = _write_grouplens(tmp_path / "b")
    text = (root / "u.item").read_bytes().decode("latin-1").replace("|0|0|0|0\n", "|0|0|0|x\n", 1)
    (root / "u.item").write_bytes(text.encode("latin-1"))
    _expect(root, "u.item", "Western", "genre flag")


def test_garbled_recbole_files(tmp_path):
    root = _write_recbole(tmp_path / "a")
    (root / "ml-100k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    _expect(root, "ml-100k.inter", "rating", "missing from the header")
    (root / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t4\tsoon\n")
    _expect(root, "ml-100k.inter", "timestamp", "epoch seconds")
    (root / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    _expect(root, "ml-100k.inter", None, "no rows")
    root = _write_recbole(tmp_path / "b")
    (root / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\n1\tToy Story\n")
    _expect(root, "ml-100k.item", "release_year", "missing from the header")
