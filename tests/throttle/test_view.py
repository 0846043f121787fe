"""``ThrottleState.view``: the snapshot's counts equal what a roll to the same time would count."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resilience._throttle.state import ThrottleState


steps = st.lists(st.tuples(st.floats(min_value=0.0, max_value=30.0), st.booleans()), max_size=60)


@given(steps=steps, later=st.floats(min_value=0.0, max_value=40.0))
def test_view_counts_what_a_roll_would(steps: list[tuple[float, bool]], later: float) -> None:
    """Fed the same calls, a viewed state and a rolled one agree on requests and accepts."""
    viewed, rolled = ThrottleState(2.0, 10.0), ThrottleState(2.0, 10.0)
    now = 0.0
    for gap, accepted in steps:
        now += gap
        for state in (viewed, rolled):
            state.record(now, accepted)
    at = now + later
    requests, accepts = viewed.view(at)
    rolled.probability(at)  # rolls the window to *at*
    assert (rolled.total_requests, rolled.total_accepts) == (requests, accepts)
    before = (viewed.total_requests, viewed.total_accepts)
    viewed.view(at)
    assert before == (viewed.total_requests, viewed.total_accepts)  # a view rolls nothing


def test_view_of_a_fresh_state_is_empty() -> None:
    """Nothing recorded: nothing in view, at any time."""
    assert (0, 0) == ThrottleState(2.0, 120.0).view(1e6)
