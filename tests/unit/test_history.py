from __future__ import annotations

import numpy as np

from serving.history import ClickLog


def test_histories_are_strictly_before_and_most_recent_first():
    log = ClickLog(np.array([0, 0, 0, 1, 1]), np.array([5, 6, 7, 8, 9]), np.array([10, 20, 30, 5, 6]))
    got = log.histories(np.array([0, 0, 0, 1, 2]), np.array([25, 10, 31, 100, 50]), 3)
    assert got.tolist() == [[6, 5, -1], [-1, -1, -1], [7, 6, 5], [9, 8, -1], [-1, -1, -1]]


def test_clicks_at_the_query_time_are_not_history():
    log = ClickLog(np.array([3, 3]), np.array([1, 2]), np.array([100, 200]))
    assert log.histories(np.array([3]), np.array([200]), 2).tolist() == [[1, -1]]


def test_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    users, items, times = rng.integers(0, 20, 500), rng.integers(0, 50, 500), rng.integers(0, 1000, 500)
    log = ClickLog(users, items, times)
    q_users, q_times = rng.integers(0, 22, 200), rng.integers(0, 1100, 200)
    got = log.histories(q_users, q_times, 4)
    for row, (u, t) in enumerate(zip(q_users, q_times)):
        mine = sorted([(tt, it) for uu, it, tt in zip(users, items, times) if uu == u and tt < t], reverse=True)
        # ties in time are ordered by item index, descending, when reading most recent first
        expected = [it for _, it in mine[:4]] + [-1] * (4 - min(4, len(mine)))
        assert got[row].tolist() == expected
