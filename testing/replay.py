"""Replay harness: drives the real azure-functions-durable orchestrator handler with history JSON.

Two levels:
- `History` builds the history JSON an out-of-process host sends,
  for hand-written single-episode tests.
- `Replayer` plays the host (Durable Task Framework) for a whole run: it calls the registered
  orchestrator with the history, turns the returned actions into TaskScheduled/TimerCreated
  events, runs fake activities, fires timers on a simulated clock, applies retry semantics
  (TaskFailed → retry timer → TaskScheduled again; after the last attempt one more timer, then
  the failure), and starts a fresh history on ContinueAsNew. Every episode's new actions,
  custom status and history size are recorded for assertions.

Time: by default activities run one at a time, each completing `activity_duration` after the
last. With `activity_time` (name, input -> how long it runs) activities overlap as they do on a
host: each completes at the time it was scheduled plus its duration, and the host delivers
whatever is due first (an activity's completion, a timer, an event raised at a time with
`raise_at`); the activity function runs at its completion time (`Replayer.clock`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

# EventType / ActionType ints.
ORCHESTRATOR_STARTED, EXECUTION_STARTED, ORCHESTRATOR_COMPLETED = 12, 0, 13
EXECUTION_COMPLETED, EXECUTION_FAILED = 1, 2
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
TIMER_CREATED, TIMER_FIRED, EVENT_RAISED, CONTINUE_AS_NEW = 10, 11, 15, 16
CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY, A_CONTINUE_AS_NEW, CREATE_TIMER, WAIT_FOR_EVENT = 0, 1, 4, 5, 6
WHEN_ALL, WHEN_ANY = 12, 11  # ActionType.WHEN_ANY is 11 (not 13, as some write-ups say)

T0 = datetime(2026, 11, 1, 8, 0, 0, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class History:
    """A growing durable history for one orchestration execution."""

    def __init__(self, name: str, instance_id: str, input_: Any, start: datetime = T0) -> None:
        self.instance_id = instance_id
        self.input = json.dumps(input_)
        self.events: list[dict[str, Any]] = []
        self._next_event_id = 0
        self.orchestrator_started(start)
        self.add(EXECUTION_STARTED, start, Name=name, Version="", Input=self.input)

    def add(
        self, event_type: int, ts: datetime, event_id: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        if event_id is None:
            event_id = -1
        event = {
            "EventType": event_type,
            "EventId": event_id,
            "IsPlayed": False,
            "Timestamp": iso(ts),
            **fields,
        }
        self.events.append(event)
        return event

    def orchestrator_started(self, ts: datetime) -> None:
        for e in self.events:
            e["IsPlayed"] = True
        self.add(ORCHESTRATOR_STARTED, ts)

    def orchestrator_completed(self, ts: datetime) -> None:
        self.add(ORCHESTRATOR_COMPLETED, ts)

    def task_scheduled(self, ts: datetime, seq: int, name: str, input_: str | None) -> None:
        self.add(TASK_SCHEDULED, ts, event_id=seq, Name=name, Input=input_)

    def task_completed(self, ts: datetime, seq: int, result: Any) -> None:
        self.add(TASK_COMPLETED, ts, TaskScheduledId=seq, Result=json.dumps(result))

    def task_failed(self, ts: datetime, seq: int, reason: str, details: str = "") -> None:
        self.add(TASK_FAILED, ts, TaskScheduledId=seq, Reason=reason, Details=details)

    def timer_created(self, ts: datetime, seq: int, fire_at: datetime) -> None:
        self.add(TIMER_CREATED, ts, event_id=seq, FireAt=iso(fire_at))

    def timer_fired(self, ts: datetime, seq: int, fire_at: datetime) -> None:
        self.add(TIMER_FIRED, ts, TimerId=seq, FireAt=iso(fire_at))

    def event_raised(self, ts: datetime, name: str, input_: Any) -> None:
        self.add(EVENT_RAISED, ts, Name=name, Input=json.dumps(input_))

    def context_json(self) -> str:
        return json.dumps(
            {
                "history": self.events,
                "instanceId": self.instance_id,
                "isReplaying": any(e["IsPlayed"] for e in self.events[1:2]),
                "input": self.input,
                "parentInstanceId": None,
                "upperSchemaVersion": 2,
            }
        )


@dataclass
class EpisodeResult:
    is_done: bool
    actions: list[dict[str, Any]]
    output: Any
    error: str | None
    custom_status: Any


def run_episode(handler: Callable[[func.OrchestrationContext], str], history: History) -> EpisodeResult:
    """Call the real orchestrator handler once with `history`; parse what it returns or raises."""
    try:
        raw = handler(func.OrchestrationContext(history.context_json()))
    except Exception as exc:  # the SDK's out-of-proc error schema
        text = str(exc)
        marker = "$OutOfProcData$:"
        if marker not in text:
            raise
        raw = text.split(marker, 1)[1]
    state = json.loads(raw)
    actions = [a for group in state.get("actions", []) for a in group]
    return EpisodeResult(
        is_done=bool(state.get("isDone")),
        actions=actions,
        output=state.get("output"),
        error=state.get("error"),
        custom_status=state.get("customStatus"),
    )


def flatten(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compound actions (WhenAll 12 / WhenAny 11; schema V2 wraps retryable tasks in WhenAll)
    schedule their children in order."""
    flat: list[dict[str, Any]] = []
    for action in actions:
        if action["actionType"] in (WHEN_ALL, WHEN_ANY):
            flat.extend(flatten(action["compoundActions"]))
        else:
            flat.append(action)
    return flat


@dataclass
class Step:
    """One episode, as a test wants to see it."""

    new_actions: list[dict[str, Any]]
    custom_status: Any
    history_len: int
    generation: int


@dataclass
class _Pending:
    seq: int
    kind: str  # "activity" | "timer" | "retry_timer" | "event"
    name: str = ""
    input: Any = None
    fire_at: datetime | None = None  # a timer's fire time, an event's delivery time
    retry: _Retry | None = None
    due: datetime | None = None  # an activity's completion time (with `activity_time` only)


@dataclass
class _Retry:
    name: str
    input: Any
    first_interval_ms: int
    max_attempts: int
    attempts: int = 1


@dataclass
class RunResult:
    output: Any
    error: str | None
    steps: list[Step]
    calls: list[tuple[str, Any]]
    generations: int
    histories: list[list[dict[str, Any]]] = field(default_factory=list)
    custom_statuses: list[Any] = field(default_factory=list)

    @property
    def activity_names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def actions_of_type(self, action_type: int) -> list[dict[str, Any]]:
        return [a for s in self.steps for a in s.new_actions if a["actionType"] == action_type]

    @property
    def max_history_len(self) -> int:
        return max(len(h) for h in self.histories)

    @property
    def total_history_events(self) -> int:
        return sum(len(h) for h in self.histories)


class Replayer:
    """Plays the Durable Task host for one orchestration, deterministically, in memory."""

    def __init__(
        self,
        handler: Callable[[func.OrchestrationContext], str],
        activities: dict[str, Callable[[Any], Any]],
        *,
        name: str,
        instance_id: str,
        input_: Any,
        start: datetime = T0,
        activity_duration: timedelta = timedelta(seconds=1),
        max_episodes: int = 10_000,
        events: list[tuple[Callable[[Any], bool], str, Any]] | None = None,
        activity_time: Callable[[str, Any], timedelta] | None = None,
    ) -> None:
        self.handler = handler
        self.activities = activities
        self.name = name
        self.instance_id = instance_id
        self.input = input_
        self.clock = start
        self.activity_duration = activity_duration
        self.max_episodes = max_episodes
        # External events: (when(custom_status) -> bool, name, payload), each raised once, as soon
        # as the orchestration's custom status satisfies `when` (a person reacting to the status).
        self.events = list(events or [])
        # How long each activity runs (name, parsed input); None: one at a time, `activity_duration`.
        self.activity_time = activity_time
        # Events raised on the instance at a simulated time (`raise_at`), across generations.
        self.timed_events: list[_Pending] = []
        self._raised = 0

    def raise_at(self, when: datetime, name: str, payload: Any) -> None:
        """Raise the external event `name` on the instance at `when` (simulated; at once if that
        has passed). Callable before `run` or from an activity while it runs (a fake service
        announcing a change); events due at the same time arrive in the order they were raised."""
        self.timed_events.append(_Pending(self._raised, "event", name, payload, fire_at=when))
        self._raised += 1

    def _activity(self, seq: int, name: str, input_: Any, retry: _Retry | None) -> _Pending:
        due = None
        if self.activity_time is not None:
            payload = json.loads(input_) if isinstance(input_, str) else input_
            due = self.clock + self.activity_time(name, payload)
        return _Pending(seq, "activity", name, input_, retry=retry, due=due)

    def run(self) -> RunResult:
        steps: list[Step] = []
        calls: list[tuple[str, Any]] = []
        histories: list[list[dict[str, Any]]] = []
        statuses: list[Any] = []
        generation = 0
        history = History(self.name, self.instance_id, self.input, self.clock)
        seq, known_actions = 0, 0
        pending: list[_Pending] = []
        host_events: list[Callable[[], None]] = []  # written by the host when the episode ends

        for _ in range(self.max_episodes):
            result = run_episode(self.handler, history)
            new_actions = result.actions[known_actions:]
            known_actions = len(result.actions)
            statuses.append(result.custom_status)

            continued, continue_input = False, None
            for record in host_events:
                record()
            host_events = []
            for action in flatten(new_actions):
                kind = action["actionType"]
                if kind in (CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY):
                    retry = None
                    if kind == CALL_ACTIVITY_WITH_RETRY:
                        opts = action["retryOptions"]
                        retry = _Retry(
                            action["functionName"],
                            action.get("input"),
                            opts["firstRetryIntervalInMilliseconds"],
                            opts["maxNumberOfAttempts"],
                        )
                    history.task_scheduled(self.clock, seq, action["functionName"], action.get("input"))
                    pending.append(self._activity(seq, action["functionName"], action.get("input"), retry))
                    seq += 1
                elif kind == CREATE_TIMER:
                    fire_at = datetime.fromisoformat(action["fireAt"].replace("Z", "+00:00"))
                    history.timer_created(self.clock, seq, fire_at)
                    pending.append(_Pending(seq, "timer", fire_at=fire_at))
                    seq += 1
                elif kind == A_CONTINUE_AS_NEW:
                    continued, continue_input = True, action.get("input")
                elif kind == WAIT_FOR_EVENT:
                    continue  # no history event: the runtime just delivers EventRaised when it comes
                else:
                    raise AssertionError(f"replayer does not support action type {kind}: {action}")
            history.orchestrator_completed(self.clock)
            steps.append(Step(new_actions, result.custom_status, len(history.events), generation))

            if result.is_done or result.error is not None:
                if result.error is not None:
                    history.add(EXECUTION_FAILED, self.clock, Reason=result.error)
                elif not continued:
                    history.add(EXECUTION_COMPLETED, self.clock, Result=json.dumps(result.output))
                histories.append(history.events)
                if continued:
                    generation += 1
                    new_input = (
                        json.loads(continue_input) if isinstance(continue_input, str) else continue_input
                    )
                    history = History(self.name, self.instance_id, new_input, self.clock)
                    seq, known_actions, pending = 0, 0, []
                    continue
                return RunResult(
                    result.output, result.error, steps, calls, generation + 1, histories, statuses
                )

            raised = next((e for e in self.events if e[0](result.custom_status)), None)
            if raised is not None:
                self.events.remove(raised)
                self.clock += self.activity_duration
                history.orchestrator_started(self.clock)
                history.event_raised(self.clock, raised[1], raised[2])
                continue
            if not pending and not self.timed_events:
                raise AssertionError("orchestration is waiting on nothing: " + json.dumps(new_actions))
            item = self._next(pending)
            if item.kind == "event":
                self.timed_events.remove(item)
                assert item.fire_at is not None
                self.clock = max(self.clock, item.fire_at)
                history.orchestrator_started(self.clock)
                history.event_raised(self.clock, item.name, item.input)
                continue
            pending.remove(item)
            host_events, seq = self._deliver(item, history, pending, calls, seq)
        raise AssertionError(f"orchestration did not finish in {self.max_episodes} episodes")

    def _deliver(
        self,
        item: _Pending,
        history: History,
        pending: list[_Pending],
        calls: list[tuple[str, Any]],
        seq: int,
    ) -> tuple[list[Callable[[], None]], int]:
        """Start the next episode with one completion; return host events to write after it."""
        host_events: list[Callable[[], None]] = []
        if item.kind in ("timer", "retry_timer"):
            assert item.fire_at is not None
            self.clock = max(self.clock, item.fire_at)
            history.orchestrator_started(self.clock)
            history.timer_fired(self.clock, item.seq, item.fire_at)
            r = item.retry
            if item.kind == "retry_timer" and r is not None and r.attempts < r.max_attempts:
                r.attempts += 1
                retry_seq, now = seq, self.clock
                pending.append(self._activity(retry_seq, r.name, r.input, r))
                host_events.append(lambda: history.task_scheduled(now, retry_seq, r.name, r.input))
                seq += 1
            return host_events, seq

        if item.due is not None:
            self.clock = max(self.clock, item.due)
        else:
            self.clock += self.activity_duration
        history.orchestrator_started(self.clock)
        payload = json.loads(item.input) if isinstance(item.input, str) else item.input
        calls.append((item.name, payload))
        if item.name not in self.activities:
            raise AssertionError(f"no fake for activity {item.name!r}")
        try:
            value = self.activities[item.name](payload)
        except Exception as exc:  # the host records any activity exception as TaskFailed
            history.task_failed(self.clock, item.seq, str(exc), "")
            if item.retry is not None:
                fire_at = self.clock + timedelta(milliseconds=item.retry.first_interval_ms)
                timer_seq, now = seq, self.clock
                pending.append(_Pending(timer_seq, "retry_timer", fire_at=fire_at, retry=item.retry))
                host_events.append(lambda: history.timer_created(now, timer_seq, fire_at))
                seq += 1
        else:
            history.task_completed(self.clock, item.seq, value)
        return host_events, seq

    def _next(self, pending: list[_Pending]) -> _Pending:
        """What the host delivers next: by default any activity first (in order), then the
        earliest timer or timed event; with `activity_time`, whatever is due first (on a tie:
        activities, then events, then timers)."""
        rank = {"activity": 0, "event": 1}
        if self.activity_time is None:
            activities = [p for p in pending if p.kind == "activity"]
            if activities:
                return activities[0]

        def due(p: _Pending) -> tuple[datetime, int, int]:
            when = p.due if p.kind == "activity" else p.fire_at
            assert when is not None
            return when, rank.get(p.kind, 2), p.seq

        return min([*pending, *self.timed_events], key=due)
