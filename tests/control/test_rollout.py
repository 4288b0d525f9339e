"""The rolling-update planner (control/rollout.py), without processes."""

from __future__ import annotations

import itertools

import pytest

from openeas.control.rollout import plan_rollout


def test_one_surge_no_unavailable_replaces_one_at_a_time() -> None:
    # 3 old ready: start one new, stop nothing yet
    assert plan_rollout(3, old_ready=3, new_ready=0, new_starting=0, surge=1, unavailable=0) == (1, 0)
    # the new one is still starting: wait (the surge budget is used)
    assert plan_rollout(3, old_ready=3, new_ready=0, new_starting=1, surge=1, unavailable=0) == (0, 0)
    # it is ready: one old goes, and the next new one starts in the same pass
    assert plan_rollout(3, old_ready=3, new_ready=1, new_starting=0, surge=1, unavailable=0) == (1, 1)
    # all new ready: the last old goes
    assert plan_rollout(3, old_ready=1, new_ready=3, new_starting=0, surge=1, unavailable=0) == (0, 1)


def test_unavailable_lets_old_go_before_new_are_ready() -> None:
    assert plan_rollout(4, old_ready=4, new_ready=0, new_starting=0, surge=0, unavailable=2) == (2, 2)


def test_both_zero_still_makes_progress_with_one_extra() -> None:
    assert plan_rollout(2, old_ready=2, new_ready=0, new_starting=0, surge=0, unavailable=0) == (1, 0)


def test_plain_scale_up_and_first_start_ignore_the_surge() -> None:
    assert plan_rollout(5, old_ready=0, new_ready=2, new_starting=0, surge=1, unavailable=0) == (3, 0)
    assert plan_rollout(3, old_ready=0, new_ready=0, new_starting=0, surge=0, unavailable=0) == (3, 0)


def test_scale_to_zero_stops_every_old_instance() -> None:
    assert plan_rollout(0, old_ready=3, new_ready=0, new_starting=0, surge=1, unavailable=0) == (0, 3)


def test_modify_that_also_scales_down_stops_the_surplus_first() -> None:
    assert plan_rollout(1, old_ready=3, new_ready=0, new_starting=0, surge=1, unavailable=0) == (1, 2)


def test_a_new_instance_that_never_gets_ready_pauses_the_update() -> None:
    old, new_ready, new_starting = 2, 0, 0
    for _ in range(10):
        start, stop = plan_rollout(2, old, new_ready, new_starting, surge=1, unavailable=0)
        new_starting += start  # they start but never become ready
        old -= stop
    assert (old, new_starting) == (2, 1)  # old ones still serve; one failing new one, no more


@pytest.mark.parametrize(
    ("desired", "surge", "unavailable"),
    list(itertools.product([1, 2, 3, 5, 10], [0, 1, 2, 3], [0, 1, 2])),
)
def test_simulated_rollout_keeps_the_bounds_and_finishes(desired: int, surge: int, unavailable: int) -> None:
    """New instances become ready one pass after they start; every pass obeys the bounds."""
    old_ready, new_ready, new_starting = desired, 0, 0
    allowed_extra = surge if surge or min(unavailable, desired) else 1
    floor = desired - min(unavailable, desired)
    for _ in range(4 * desired + 5):
        start, stop = plan_rollout(desired, old_ready, new_ready, new_starting, surge, unavailable)
        assert 0 <= stop <= old_ready
        old_ready -= stop
        new_ready, new_starting = new_ready + new_starting, start  # last pass's starts are ready
        assert old_ready + new_ready + new_starting <= desired + allowed_extra
        assert old_ready + new_ready >= floor
        if old_ready == 0 and new_ready == desired and new_starting == 0:
            break
    assert (old_ready, new_ready, new_starting) == (0, desired, 0)
