"""Exercise (d): recurrence and formula agree, with each other, with minigrad and with a schedule."""
import pytest

from minigrad.checkpoint import binomial_extra_forwards, schedules as S

EXERCISE = "revolve_count"


def test_the_formula_matches_minigrad(exercise):
    for L in range(1, 101):
        for s in range(1, 11):
            assert exercise.extra_forwards(L, s) == binomial_extra_forwards(L, s), (L, s)


def test_the_recurrence_equals_the_formula(exercise):
    for l in range(1, 61):
        for s in range(1, 9):
            assert exercise.fewest_forwards(l, s) == l + exercise.extra_forwards(l, s), (l, s)


@pytest.mark.parametrize("L, s, forwards", [(8, 3, 19), (64, 4, 264), (100, 5, 416), (100, 100, 199)])
def test_worked_examples_from_chapter_6(exercise, L, s, forwards):
    assert L + exercise.extra_forwards(L, s) == forwards


@pytest.mark.parametrize("L, s", [(10, 3), (20, 2), (33, 5)])
def test_a_revolve_schedule_runs_exactly_that_many_forwards(exercise, L, s):
    assert S.revolve(L, s).simulate().layer_forwards == exercise.fewest_forwards(L, s)
