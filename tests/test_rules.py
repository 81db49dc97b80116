"""Transitions, readiness and the cascade without a database."""

import pytest

from mcp_server.errors import InvalidTransition
from mcp_server.services import rules
from mcp_server.services.rules import Event, State

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize(
    ("current", "event", "target"),
    [
        (State.EMPTY, Event.START, State.RUNNING),
        (State.STALE, Event.START, State.RUNNING),
        (State.FAILED, Event.START, State.RUNNING),
        (State.COMPLETED, Event.START, State.RUNNING),
        (State.EMPTY, Event.COMPLETE, State.COMPLETED),
        (State.RUNNING, Event.COMPLETE, State.COMPLETED),
        (State.STALE, Event.COMPLETE, State.COMPLETED),
        (State.RUNNING, Event.FAIL, State.FAILED),
        (State.COMPLETED, Event.INVALIDATE, State.STALE),
        (State.RUNNING, Event.INVALIDATE, State.STALE),
        (State.FAILED, Event.INVALIDATE, State.STALE),
    ],
)
def test_allowed_transitions(current: State, event: Event, target: State) -> None:
    assert rules.next_state(current, event) == target


@pytest.mark.parametrize(
    ("current", "event"),
    [
        (State.RUNNING, Event.START),
        (State.EMPTY, Event.FAIL),
        (State.COMPLETED, Event.FAIL),
        (State.EMPTY, Event.INVALIDATE),
    ],
)
def test_refused_transitions_say_what_to_do(current: State, event: Event) -> None:
    with pytest.raises(InvalidTransition) as caught:
        rules.next_state(current, event, process_id="p")
    assert caught.value.code == "invalid_transition"
    assert caught.value.hint


def test_ready_iff_every_dependency_completed() -> None:
    states = {"a": State.COMPLETED, "b": State.COMPLETED, "c": State.STALE}
    assert rules.is_ready(DIAMOND, states, "b")
    assert rules.blockers(DIAMOND, states, "d") == {"c": State.STALE}
    assert not rules.is_ready(DIAMOND, states, "d")
    assert rules.is_ready(DIAMOND, {}, "a")


def test_can_run_next_excludes_completed_and_running() -> None:
    states = {"a": State.COMPLETED, "b": State.RUNNING, "c": State.FAILED}
    assert not rules.can_run_next(DIAMOND, states, "a")
    assert not rules.can_run_next(DIAMOND, states, "b")
    assert rules.can_run_next(DIAMOND, states, "c")
    assert not rules.can_run_next(DIAMOND, states, "d")


def test_cascade_reaches_transitive_dependents_but_not_empty_or_stale_ones() -> None:
    states = {"a": State.COMPLETED, "b": State.COMPLETED, "c": State.EMPTY, "d": State.RUNNING}
    hits = rules.cascade(DIAMOND, states, "a")
    assert [(h.process_id, h.previous) for h in hits] == [("b", State.COMPLETED), ("d", State.RUNNING)]
    states["b"] = State.STALE
    assert [h.process_id for h in rules.cascade(DIAMOND, states, "a")] == ["d"]


def test_finish_decides_completion_late_finish_and_superseded() -> None:
    from mcp_server.enums import ExecutionStatus
    from mcp_server.services.rules import finish

    one_call = finish(State.RUNNING, started=False, changed_since_start=False, force=True)
    assert (one_call.status, one_call.target, one_call.cascades) == (ExecutionStatus.COMPLETED, State.COMPLETED, True)
    plain = finish(State.RUNNING, started=True, changed_since_start=False, force=False)
    assert plain.target == State.COMPLETED and not plain.late and not plain.superseded
    for force in (False, True):  # a late finish stays late, forced or not: its input was outdated
        late = finish(State.STALE, started=True, changed_since_start=True, force=force)
        assert (late.status, late.target, late.late) == (ExecutionStatus.STALE, None, True)
    overtaken = finish(State.COMPLETED, started=True, changed_since_start=True, force=False)
    assert (overtaken.status, overtaken.target, overtaken.superseded) == (ExecutionStatus.SUPERSEDED, None, True)
    forced = finish(State.COMPLETED, started=True, changed_since_start=True, force=True)
    assert forced.status == ExecutionStatus.COMPLETED and forced.target == State.COMPLETED


def test_fail_moves_only_a_step_this_execution_still_runs() -> None:
    from mcp_server.services.rules import fail

    assert fail(State.RUNNING, changed_since_start=False) == State.FAILED
    assert fail(State.RUNNING, changed_since_start=True) is None  # another execution's run
    assert fail(State.COMPLETED, changed_since_start=True) is None
    assert fail(State.STALE, changed_since_start=False) is None
