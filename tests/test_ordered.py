"""``map_in_order``: results in the items' order whatever the pool, a bounded read-ahead, errors in turn."""

from __future__ import annotations

import itertools
import math

import pytest

from goggleqc.ordered import map_in_order


def _slow_square(x: int) -> int:
    # uneven work, so that later items often finish first
    math.factorial(2000 + 700 * (x % 3))
    return x * x


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


@pytest.mark.parametrize("pool, workers", [("threads", 1), ("threads", 3), ("processes", 2)])
def test_results_come_in_the_items_order(pool, workers):
    assert list(map_in_order(_slow_square, range(20), workers, pool)) == [x * x for x in range(20)]


def test_only_a_few_items_are_taken_ahead_of_the_results():
    taken = []
    stream = (taken.append(x) or x for x in itertools.count())
    results = map_in_order(_slow_square, stream, 2)
    assert [next(results) for _ in range(3)] == [0, 1, 4]
    assert len(taken) <= 3 + 2 * 2
    results.close()


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_an_error_is_raised_in_its_turn(pool):
    results = map_in_order(_fails_on_three, range(10), 2, pool)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)


def test_an_unknown_pool_is_refused():
    with pytest.raises(ValueError, match="pool must be one of threads, processes"):
        list(map_in_order(_slow_square, range(3), 2, "dask"))
