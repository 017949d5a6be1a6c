"""Schedules are pure data: forward counts, slots and predicted peaks, checked without arrays."""
import math
from functools import lru_cache

import pytest

from minigrad.checkpoint import schedules as S
from minigrad.errors import ScheduleError


@lru_cache(maxsize=None)
def brute_force(length, s):
    """Fewest layer forwards to reverse ``length`` layers with ``s`` slots: the recurrence, searched fully."""
    if length == 1:
        return 1
    if s == 1:
        return length * (length + 1) // 2
    return min(m + brute_force(length - m, s - 1) + brute_force(m, s) for m in range(1, length))


@pytest.mark.parametrize("L", range(1, 41))
@pytest.mark.parametrize("s", [1, 2, 3, 4, 6])
@pytest.mark.bounds
def test_binomial_formula_is_the_true_minimum(L, s):
    assert S.revolve_forwards(L, s) == brute_force(L, s)


@pytest.mark.parametrize("L,s", [(1, 1), (2, 1), (5, 1), (10, 2), (10, 9), (10, 10), (33, 4),
                                 (100, 1), (100, 5), (100, 99), (257, 3), (1000, 2), (1000, 10),
                                 (1000, 999), (1000, 1000)])
@pytest.mark.bounds
def test_revolve_schedule_has_exactly_L_plus_t_forwards(L, s):
    sim = S.revolve(L, s).simulate()
    assert sim.layer_forwards == L + S.binomial_extra_forwards(L, s)
    assert sim.peak_slots <= s


def test_t_formula_known_values():
    assert S.binomial_extra_forwards(1, 1) == 0
    assert S.binomial_extra_forwards(10, 1) == 45          # every layer from the input: 0+1+...+9
    assert S.binomial_extra_forwards(10, 9) == 9           # enough slots: each reversal records once more
    assert S.binomial_extra_forwards(3, 2) == 2


@pytest.mark.parametrize("L", [1, 2, 3, 7, 16, 64, 100, 1024])
@pytest.mark.bounds
def test_sqrt_and_uniform_counts(L):
    sim = S.sqrt(L).simulate()
    k = math.isqrt(L - 1) + 1
    last = L - round((k - 1) * L / k)
    assert sim.layer_forwards == 2 * L - last <= 2 * L
    assert sim.peak_slots == max(1, k - 1)     # the last segment's input is recorded from, never restored


@pytest.mark.parametrize("L", [1, 2, 3, 5, 8, 16, 100, 1000, 1024])
@pytest.mark.bounds
def test_recursive_counts_and_slots(L):
    sim = S.recursive(L).simulate()
    assert sim.layer_forwards <= L * (math.ceil(math.log2(L)) + 1)
    assert sim.peak_slots <= math.ceil(math.log2(L)) + 1 if L > 1 else sim.peak_slots == 1


@pytest.mark.parametrize("L", [1, 4, 30])
@pytest.mark.bounds
def test_none_records_everything_once(L):
    sim = S.none(L).simulate()
    assert sim.layer_forwards == L and sim.recomputed_forwards == 0
    assert sim.peak_units == L + 3          # x_0..x_L plus two gradients in flight


@pytest.mark.bounds
def test_predicted_peaks_follow_the_theorems():
    for L in (16, 64, 256, 1024):
        assert S.sqrt(L).simulate().peak_units <= 2 * math.ceil(math.sqrt(L)) + 2
        assert S.recursive(L).simulate().peak_units <= math.ceil(math.log2(L)) + 4
        for s in (2, 4, 8):
            assert S.revolve(L, s).simulate().peak_units <= s + 4
    assert S.sqrt(1024).simulate().peak_units <= 70
    assert S.recursive(1024).simulate().peak_units <= 16


def test_schedules_print_a_timeline():
    text = S.revolve(8, 3).pretty()
    assert text.splitlines()[0].startswith("revolve(L=8, slots=3): 19 layer forwards (11 recomputed)")
    assert "forward :" in text and "backward:" in text and "rec 8" in text
    assert "sqrt(L=8" in str(S.sqrt(8))


def test_bad_schedules_are_refused():
    with pytest.raises(ScheduleError, match="valid strategies are none, sqrt, recursive, revolve, budget"):
        S.make("fastest", 8)
    with pytest.raises(ScheduleError, match="slots >= 1"):
        S.revolve(8, 0)
    with pytest.raises(ScheduleError, match=r"1\.\.L=8"):
        S.uniform(8, 9)
    with pytest.raises(ScheduleError, match=r"1\.\.L=8"):
        S.uniform(8, 0)
    with pytest.raises(ScheduleError, match="at least one layer"):
        S.sqrt(0)
    with pytest.raises(ScheduleError, match="current activation"):
        S.Schedule("bad", 2, [S.Action("record", 2), S.Action("reverse", 2), S.Action("reverse", 1)])
