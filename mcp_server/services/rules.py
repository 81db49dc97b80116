"""Pipeline state rules (pure): transitions, readiness, the invalidation cascade, leases and claims
(docs/design.md, "Pipeline semantics", "Agent teams")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mcp_server.enums import ExecutionStatus, StateName
from mcp_server.errors import InvalidTransition
from mcp_server.services.dag import Graph, descendants

# One set of state names: the schemas' enum is the rules' enum.
State = StateName


class Event(StrEnum):
    START = "start"  # start_execution
    COMPLETE = "complete"  # record_execution
    FAIL = "fail"  # fail_execution of the running execution
    INVALIDATE = "invalidate"  # invalidate_process, or the cascade


# event -> {from state: to state}; a missing entry is an invalid transition.
TRANSITIONS: dict[Event, dict[State, State]] = {
    Event.START: {
        State.EMPTY: State.RUNNING,
        State.COMPLETED: State.RUNNING,
        State.FAILED: State.RUNNING,
        State.STALE: State.RUNNING,
    },
    Event.COMPLETE: dict.fromkeys(State, State.COMPLETED),
    Event.FAIL: {State.RUNNING: State.FAILED},
    Event.INVALIDATE: {
        State.RUNNING: State.STALE,
        State.COMPLETED: State.STALE,
        State.FAILED: State.STALE,
        State.STALE: State.STALE,
    },
}

# The cascade reaches these; `empty` stays empty and `stale` keeps its first root cause.
CASCADE_FROM = frozenset({State.COMPLETED, State.FAILED, State.RUNNING})

HINTS = {
    Event.START: "It is already running (get_process_state names the execution): finish it with "
    "record_execution(execution_id=…), or fail_execution it if it was abandoned",
    Event.FAIL: "Only a running execution can fail",
    Event.INVALIDATE: "Nothing to invalidate: the process has never run in this project",
}


def next_state(current: State, event: Event, *, process_id: str = "") -> State:
    target = TRANSITIONS[event].get(current)
    if target is None:
        raise InvalidTransition(
            f"cannot {event.value} process {process_id!r} in state {current.value}", hint=HINTS.get(event)
        )
    return target


def blockers(graph: Graph, states: Mapping[str, State], process_id: str) -> dict[str, State]:
    """The dependencies of a process that are not completed, with their states."""
    return {
        dep: states.get(dep, State.EMPTY)
        for dep in graph.get(process_id, ())
        if states.get(dep, State.EMPTY) != State.COMPLETED
    }


@dataclass(frozen=True)
class CheckResult:
    """The latest result of one named check of an execution, as the rules need it."""

    passed: bool
    summary: str | None = None  # what a failure said, shortened


@dataclass(frozen=True)
class Verdict:
    """A completed step's required checks that its current execution has not passed (docs/design.md,
    "Checks"): while any is missing or failed, the steps that depend on it cannot run."""

    missing: tuple[str, ...] = ()
    failed: tuple[tuple[str, str | None], ...] = ()  # (name, summary)

    def __bool__(self) -> bool:
        return bool(self.missing or self.failed)

    def describe(self, process_id: str) -> list[str]:
        """How a blocked step names them: `check review of design: missing` or `…: failed: <summary>`."""
        named = [f"check {name} of {process_id}: missing" for name in self.missing]
        for name, summary in self.failed:
            named.append(f"check {name} of {process_id}: failed" + (f": {summary}" if summary else ""))
        return named


def verdict(required: Sequence[str], results: Mapping[str, CheckResult]) -> Verdict:
    """Which of the ``required`` checks ``results`` (the current execution's, by name) lack or failed."""
    missing = tuple(name for name in required if name not in results)
    failed = tuple((name, results[name].summary) for name in required if name in results and not results[name].passed)
    return Verdict(missing, failed)


# Completed steps whose required checks are not all passed, by process id; the rest hold nothing.
Holds = Mapping[str, Verdict]


def check_blockers(graph: Graph, holds: Holds | None, process_id: str) -> list[str]:
    """The unmet checks of a process's dependencies, named (see ``Verdict.describe``)."""
    if not holds:
        return []
    return [text for dep in graph.get(process_id, ()) if (held := holds.get(dep)) for text in held.describe(dep)]


def is_ready(graph: Graph, states: Mapping[str, State], process_id: str, holds: Holds | None = None) -> bool:
    """Every dependency completed, and none held by its checks."""
    return not blockers(graph, states, process_id) and not check_blockers(graph, holds, process_id)


def can_run_next(graph: Graph, states: Mapping[str, State], process_id: str, holds: Holds | None = None) -> bool:
    """Ready, and neither completed nor running (docs/design.md, "Pipeline semantics")."""
    current = states.get(process_id, State.EMPTY)
    return is_ready(graph, states, process_id, holds) and current not in (State.COMPLETED, State.RUNNING)


@dataclass(frozen=True)
class Invalidation:
    process_id: str
    previous: State
    cause: str = ""  # the root cause, when one change has several (a redefined pipeline)


def cascade(
    graph: Graph, states: Mapping[str, State], root: str, *, reverse: Mapping[str, list[str]] | None = None
) -> list[Invalidation]:
    """Transitive dependents of ``root`` that go stale (completed, failed or running ones); ``reverse``: the
    graph's dependents, when the caller keeps them."""
    return [
        Invalidation(process_id=node, previous=states.get(node, State.EMPTY))
        for node in descendants(graph, [root], reverse=reverse)
        if states.get(node, State.EMPTY) in CASCADE_FROM
    ]


def stale_after_redefinition(
    graph: Graph, states: Mapping[str, State], order: list[str], redefined: list[str]
) -> list[Invalidation]:
    """What goes stale when the definitions of ``redefined`` change what they compute: each of them that
    is completed, failed or running (its own cause), then the usual cascade from it; roots taken in
    dependency order, and a step already made stale keeps its first cause."""
    current = dict(states)
    position = {pid: i for i, pid in enumerate(order)}
    hits: list[Invalidation] = []
    for root in sorted(redefined, key=lambda pid: position.get(pid, len(position))):
        if current.get(root, State.EMPTY) in CASCADE_FROM:
            hits.append(Invalidation(process_id=root, previous=current[root], cause=root))
            current[root] = State.STALE
        for hit in cascade(graph, current, root):
            hits.append(Invalidation(process_id=hit.process_id, previous=hit.previous, cause=root))
            current[hit.process_id] = State.STALE
    return hits


@dataclass(frozen=True)
class Finish:
    """What finishing an execution does: the status the execution is stored with, the state the step
    moves to (None: it stays as it is) and whether a new output cascades downstream."""

    status: ExecutionStatus
    target: State | None
    cascades: bool
    late: bool = False
    superseded: bool = False


def finish(current: State, *, started: bool, changed_since_start: bool, force: bool) -> Finish:
    """record_execution's transition (docs/design.md, "Invalidation cascade"). A one-call record
    (``started`` false) completes the step. A started execution that finishes after its step went stale
    is stored `stale` and leaves the step stale (its input was outdated: a late finish, whatever
    ``force`` says); after another execution changed the step (``changed_since_start``) it is stored
    `superseded` and the step keeps the other result, unless ``force``; otherwise it completes the step."""
    if started and current == State.STALE:
        return Finish(ExecutionStatus.STALE, None, cascades=False, late=True)
    if started and changed_since_start and not force:
        return Finish(ExecutionStatus.SUPERSEDED, None, cascades=False, superseded=True)
    return Finish(ExecutionStatus.COMPLETED, next_state(current, Event.COMPLETE), cascades=True)


def fail(current: State, *, changed_since_start: bool) -> State | None:
    """fail_execution's transition: the running step becomes failed, unless another execution changed the
    step since this one started (then the step is not this execution's to fail, and stays)."""
    return None if changed_since_start else TRANSITIONS[Event.FAIL].get(current)


# Agent teams (docs/design.md, "Agent teams"): leases, attempts, backoff and claims, decided from the clock.

MAX_BACKOFF_SECONDS = 86_400


def lease_end(now: datetime, lease_seconds: int, deadline: datetime | None) -> datetime:
    """Where a lease taken or renewed now ends: ``lease_seconds`` ahead, never past the attempt's
    start-to-close ``deadline``."""
    end = now + timedelta(seconds=lease_seconds)
    return end if deadline is None else min(end, deadline)


def lease_passed(lease_expires_at: datetime | None, now: datetime) -> bool:
    """A running execution whose lease has passed is expired, whether or not anyone wrote it so yet."""
    return lease_expires_at is not None and lease_expires_at <= now


@dataclass(frozen=True)
class AfterFailure:
    """A step after a failed or expired attempt: the attempts in a row, when it may be claimed again, and
    whether it gave up (no claim until a forced start or a new definition)."""

    attempts: int
    retry_at: datetime | None
    gave_up: bool


def after_failure(attempts_before: int, *, max_attempts: int, backoff_seconds: int, now: datetime) -> AfterFailure:
    attempts = attempts_before + 1
    gave_up = attempts >= max_attempts
    if gave_up or backoff_seconds <= 0:
        return AfterFailure(attempts, None, gave_up)
    delay = min(backoff_seconds * 2 ** min(attempts - 1, 30), MAX_BACKOFF_SECONDS)
    return AfterFailure(attempts, now + timedelta(seconds=delay), gave_up)


def gave_up(attempts: int, max_attempts: int) -> bool:
    return attempts >= max_attempts


@dataclass(frozen=True)
class StepClock:
    """What a claim needs to know of a step besides the states: its attempts, backoff and live holder."""

    attempts: int = 0
    max_attempts: int = 3
    retry_at: datetime | None = None
    held: bool = False  # a running execution whose lease has not passed


def claimable(
    graph: Graph,
    states: Mapping[str, State],
    process_id: str,
    clock: StepClock,
    now: datetime,
    holds: Holds | None = None,
) -> bool:
    """A claim may take the step: ready (its dependencies' checks passed too), not completed, held by no
    live execution, not backing off and not given up. A running step whose lease passed counts as not
    running."""
    current = states.get(process_id, State.EMPTY)
    if current == State.COMPLETED or clock.held or not is_ready(graph, states, process_id, holds):
        return False
    if gave_up(clock.attempts, clock.max_attempts):
        return False
    return clock.retry_at is None or clock.retry_at <= now


def first_claimable(
    order: list[str],
    graph: Graph,
    states: Mapping[str, State],
    clocks: Mapping[str, StepClock],
    now: datetime,
    holds: Holds | None = None,
) -> str | None:
    """The first step of the plan, in run order, that a claim may take."""
    for process_id in order:
        if claimable(graph, states, process_id, clocks.get(process_id, StepClock()), now, holds):
            return process_id
    return None


class Reuse(StrEnum):
    """What a start does about the same work done before (docs/design.md, "Reuse and stale causes")."""

    RUN = "run"  # run the step (a completed execution with the same key is only offered)
    TAKE = "take"  # complete it at once from that execution's output, at no cost
    WAIT = "wait"  # another project computes the same key now: refused, naming it


def reuse(scope: str, *, wanted: bool | None, offered: bool, computing: bool) -> Reuse:
    """``scope`` is the definition's (project, pipeline, off); ``wanted`` the start's `reuse` (true: take
    what is offered; false: always run; none: run, and say what is offered). A key computed right now
    elsewhere is waited for unless the agent asked to run anyway: the same work is never paid twice at once."""
    if scope == "off" or wanted is False:
        return Reuse.RUN
    if offered and wanted:
        return Reuse.TAKE
    return Reuse.WAIT if computing else Reuse.RUN
