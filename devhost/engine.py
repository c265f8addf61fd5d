"""The durable orchestration engine: the host side of the out-of-process replay protocol.

For each episode it hands the real azure-functions-durable orchestrator handler the instance's
history JSON (exactly what the Functions host sends), reads back the actions, and turns them into
history events and work: TaskScheduled + an activity to run, TimerCreated + a due TimerFired,
SubOrchestrationInstanceCreated + a child instance, ContinueAsNew + a fresh execution. Retry
options follow Durable Task semantics (TaskFailed → retry timer → TaskScheduled again; after the
last attempt one more timer, then the failure surfaces), and task ids follow the SDK's sequence
numbering, so the histories match what the Functions host would write.

One inbox event is delivered per episode, and each episode commits in one SQLite transaction
(history appended, work created, the inbox event consumed). A crash between transactions loses
nothing: the episode is replayed, the activity that was in flight runs again.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func

from devhost.functions import FunctionIndex
from devhost.store import Store, dumps

log = logging.getLogger("devhost.engine")

# History EventType and ActionType ints (the SDK's HistoryEventType / ActionType).
EXECUTION_STARTED, EXECUTION_COMPLETED, EXECUTION_FAILED, EXECUTION_TERMINATED = 0, 1, 2, 3
TASK_SCHEDULED, TASK_COMPLETED, TASK_FAILED = 4, 5, 6
SUB_CREATED, SUB_COMPLETED, SUB_FAILED = 7, 8, 9
TIMER_CREATED, TIMER_FIRED, ORCHESTRATOR_STARTED, ORCHESTRATOR_COMPLETED = 10, 11, 12, 13
EVENT_RAISED, CONTINUE_AS_NEW = 15, 16
EVENT_NAMES = {
    0: "ExecutionStarted", 1: "ExecutionCompleted", 2: "ExecutionFailed", 3: "ExecutionTerminated",
    4: "TaskScheduled", 5: "TaskCompleted", 6: "TaskFailed", 7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted", 9: "SubOrchestrationInstanceFailed", 10: "TimerCreated",
    11: "TimerFired", 12: "OrchestratorStarted", 13: "OrchestratorCompleted", 14: "EventSent",
    15: "EventRaised", 16: "ContinueAsNew",
}  # fmt: skip
A_ACTIVITY, A_ACTIVITY_RETRY, A_SUB, A_SUB_RETRY, A_CONTINUE = 0, 1, 2, 3, 4
A_TIMER, A_WAIT_EVENT, A_WHEN_ALL, A_WHEN_ANY = 5, 6, 12, 11

ACTIVE = ("Pending", "Running")
TERMINAL = ("Completed", "Failed", "Terminated")
# Every runtime status the Durable Functions API knows (the dev host only produces the first five;
# a query may still name the others, and then they match nothing).
RUNTIME_STATUSES = (
    "Pending", "Running", "Completed", "Failed", "Terminated", "ContinuedAsNew", "Suspended", "Canceled",
)  # fmt: skip
DEFAULT_PAGE_SIZE = 100  # the extension's OrchestrationStatusQueryCondition.PageSize default
MAX_PAGE_SIZE = 2**31 - 1  # the extension's PageSize is an Int32
CONTINUATION_HEADER = "x-ms-continuation-token"


class Conflict(Exception):
    """An instance with this id is already pending or running."""


class NotFound(Exception):
    pass


class Gone(Exception):
    """The instance already finished."""


class BadQuery(ValueError):
    """An instance query that cannot be answered (answered 400); `field` names the query parameter
    or header at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class InstanceQuery:
    """The filters of a list-instances query; an instance is listed if it matches every one given.

    `created_from` / `created_to` are inclusive bounds on the creation time (full precision; a naive
    datetime is UTC), `runtime_status` any of these statuses (empty: any status), and
    `instance_id_prefix` a case-sensitive prefix of the instance id (empty: any id)."""

    created_from: datetime | None = None
    created_to: datetime | None = None
    runtime_status: tuple[str, ...] = ()
    instance_id_prefix: str = ""


@dataclass(frozen=True)
class InstancePage:
    instances: list[dict[str, Any]]
    continuation: str | None  # None on the last page


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def flatten(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for a in actions:
        if a["actionType"] in (A_WHEN_ALL, A_WHEN_ANY):
            out.extend(flatten(a["compoundActions"]))
        else:
            out.append(a)
    return out


def _event(event_type: int, ts: datetime, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    return {"EventType": event_type, "EventId": event_id, "IsPlayed": False, "Timestamp": iso(ts), **fields}


@dataclass(frozen=True)
class WorkItem:
    id: int
    instance_id: str
    execution: int
    seq: int
    name: str
    input: str | None
    retry: dict[str, Any] | None


class Engine:
    def __init__(self, store: Store, index: FunctionIndex, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.index = index
        self.clock = clock

    # -- client operations (the management API) -------------------------------------------------

    def start(self, name: str, instance_id: str, input_json: str | None) -> None:
        if name not in self.index.orchestrators:
            raise KeyError(f"no orchestrator named {name!r}")
        now = self.clock()
        with self.store.tx() as db:
            row = db.execute("SELECT status FROM instances WHERE id=?", (instance_id,)).fetchone()
            if row is not None:
                if row["status"] in ACTIVE:
                    raise Conflict(f"an instance with ID '{instance_id}' is already {row['status'].lower()}")
                self._purge(db, instance_id)  # NonRunningStates: a finished instance may be replaced
            self._create(db, name, instance_id, input_json, now)

    def _create(
        self,
        db: Any,
        name: str,
        instance_id: str,
        input_json: str | None,
        now: datetime,
        parent: tuple[str, int] | None = None,
    ) -> None:
        db.execute(
            "INSERT INTO instances (id, name, status, input, created, updated, parent_id, parent_seq)"
            " VALUES (?, ?, 'Pending', ?, ?, ?, ?, ?)",
            (instance_id, name, input_json, iso(now), iso(now), *(parent or (None, None))),
        )
        started = _event(EXECUTION_STARTED, now, Name=name, Version="", Input=input_json)
        if parent:
            started["ParentInstance"] = {"OrchestrationInstance": {"InstanceId": parent[0]}}
        _inbox(db, instance_id, 0, started)

    def status(self, instance_id: str, show_history: bool = False, show_input: bool = True) -> dict[str, Any]:
        with self.store.read() as db:
            row = db.execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
            if row is None:
                raise NotFound(instance_id)
            events = (
                [json.loads(r["event"]) for r in db.execute(
                    "SELECT event FROM history WHERE instance_id=? ORDER BY idx", (instance_id,))]
                if show_history else None
            )  # fmt: skip
        body = status_json(row, show_input)
        if events is not None:
            body["historyEvents"] = [
                {**e, "EventType": EVENT_NAMES.get(e["EventType"], e["EventType"])} for e in events
            ]
        return body

    def list_instances(
        self,
        query: InstanceQuery | None = None,
        *,
        show_input: bool = True,
        top: int = DEFAULT_PAGE_SIZE,
        continuation: str | None = None,
    ) -> InstancePage:
        """One page of the instances that match `query` (the "get all instances status" API).

        Pages are in (created time, instance id) order, a keyset: the continuation token names the
        last instance of the page, and the next page starts after it, so instances created while a
        client pages (they sort last) neither shift nor repeat the pages. Azure's providers promise
        no order at all: callers that need one sort themselves. Raises BadQuery for a bad `top`,
        status or token."""
        query = query or InstanceQuery()
        if not 1 <= top <= MAX_PAGE_SIZE:
            raise BadQuery("top", f"top must be a whole number from 1 to {MAX_PAGE_SIZE}, not {top}")
        unknown = [s for s in query.runtime_status if s not in RUNTIME_STATUSES]
        if unknown:
            raise BadQuery("runtimeStatus", f"unknown runtime status {unknown[0][:40]!r}")
        after = decode_continuation(continuation) if continuation else None
        sql, params = list_sql(query, after, top + 1, show_input)  # one more: is there a next page?
        with self.store.read() as db:
            rows = db.execute(sql, params).fetchall()
        last = rows[top - 1] if len(rows) > top else None
        token = encode_continuation(last["created"], last["id"]) if last is not None else None
        return InstancePage([status_json(row, show_input) for row in rows[:top]], token)

    def raise_event(self, instance_id: str, name: str, data_json: str | None) -> None:
        now = self.clock()
        with self.store.tx() as db:
            row = self._row(db, instance_id)
            if row["status"] in TERMINAL:
                raise Gone(instance_id)
            _inbox(db, instance_id, row["execution"], _event(EVENT_RAISED, now, Name=name, Input=data_json))

    def terminate(self, instance_id: str, reason: str) -> None:
        now = self.clock()
        with self.store.tx() as db:
            row = self._row(db, instance_id)
            if row["status"] in TERMINAL:
                raise Gone(instance_id)
            self._append(db, instance_id, [_event(EXECUTION_TERMINATED, now, Input=reason)])
            self._finish(db, row, "Terminated", dumps(reason), now)

    def purge(self, instance_id: str) -> int:
        with self.store.tx() as db:
            return self._purge(db, instance_id)

    @staticmethod
    def _purge(db: Any, instance_id: str) -> int:
        n = db.execute("DELETE FROM instances WHERE id=?", (instance_id,)).rowcount
        for table in ("history", "inbox", "work"):
            db.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        return n

    @staticmethod
    def _row(db: Any, instance_id: str) -> Any:
        row = db.execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
        if row is None:
            raise NotFound(instance_id)
        return row

    # -- scheduling -----------------------------------------------------------------------------

    def next_due(self) -> datetime | None:
        """When the earliest timer that is not yet due fires (None if there is none)."""
        with self.store.read() as db:
            row = db.execute("SELECT MIN(due) AS due FROM inbox WHERE due IS NOT NULL").fetchone()
        return parse_ts(row["due"]) if row and row["due"] else None

    def pending_work(self, exclude: set[int]) -> list[WorkItem]:
        with self.store.read() as db:
            rows = db.execute("SELECT * FROM work ORDER BY id").fetchall()
        return [
            WorkItem(r["id"], r["instance_id"], r["execution"], r["seq"], r["name"], r["input"],
                     json.loads(r["retry"]) if r["retry"] else None)
            for r in rows if r["id"] not in exclude
        ]  # fmt: skip

    # -- activities -----------------------------------------------------------------------------

    def run_activity(self, item: WorkItem) -> None:
        """Run one activity (outside any transaction) and record its result atomically."""
        fn = self.index.activities.get(item.name)
        try:
            if fn is None:
                raise RuntimeError(f"no activity function named {item.name!r}")
            binding = fn.binding("activityTrigger")
            assert binding is not None
            payload = json.loads(item.input) if item.input is not None else None
            result = fn.call(**{binding["name"]: payload})
            outcome = _event(
                TASK_COMPLETED, self.clock(), TaskScheduledId=item.seq, Result=json.dumps(result)
            )
            retry = None
        except Exception as exc:
            log.warning("activity %s (%s #%d) failed: %s", item.name, item.instance_id, item.seq, exc)
            reason = str(exc) or type(exc).__name__
            outcome = _event(TASK_FAILED, self.clock(), TaskScheduledId=item.seq, Reason=reason, Details="")
            retry = item.retry
        with self.store.tx() as db:
            if db.execute("DELETE FROM work WHERE id=?", (item.id,)).rowcount == 0:
                return  # the instance was terminated, purged or continued as new meanwhile
            _inbox(db, item.instance_id, item.execution, outcome, retry=retry)

    # -- episodes -------------------------------------------------------------------------------

    def run_next_episode(self) -> str | None:
        """Deliver one due inbox event to its instance and run an episode; return the instance id."""
        now = self.clock()
        with self.store.tx() as db:
            item = db.execute(
                "SELECT inbox.* FROM inbox JOIN instances ON instances.id = inbox.instance_id"
                " WHERE (inbox.due IS NULL OR inbox.due <= ?) AND inbox.execution = instances.execution"
                " AND instances.status IN ('Pending', 'Running') ORDER BY inbox.id LIMIT 1",
                (iso(now),),
            ).fetchone()
            if item is None:
                return None
            row = self._row(db, item["instance_id"])
            db.execute("DELETE FROM inbox WHERE id=?", (item["id"],))
            self._episode(db, row, item, now)
            return row["id"]

    def _episode(self, db: Any, row: Any, item: Any, now: datetime) -> None:
        instance_id, execution = row["id"], row["execution"]
        history = [json.loads(r["event"]) for r in db.execute(
            "SELECT event FROM history WHERE instance_id=? ORDER BY idx", (instance_id,))]  # fmt: skip
        for e in history:
            e["IsPlayed"] = True
        seq = row["next_seq"]
        delivered = json.loads(item["event"])
        delivered["Timestamp"] = iso(now)
        new = [_event(ORCHESTRATOR_STARTED, now), delivered]
        after: list[dict[str, Any]] = []  # events the host writes once the episode's code has run

        retry = json.loads(item["retry"]) if item["retry"] else None
        if retry is not None and delivered["EventType"] in (TASK_FAILED, SUB_FAILED):
            # Durable Task's retry: a timer after every failure (also after the last attempt).
            fire_at = now + timedelta(milliseconds=retry["first_ms"])
            after.append(_event(TIMER_CREATED, now, seq, FireAt=iso(fire_at)))
            fired = _event(TIMER_FIRED, fire_at, TimerId=seq, FireAt=iso(fire_at))
            _inbox(db, instance_id, execution, fired, due=fire_at, retry=retry | {"phase": "timer"})
            seq += 1
        elif retry is not None and retry.get("phase") == "timer" and retry["attempt"] < retry["max"]:
            again = retry | {"attempt": retry["attempt"] + 1, "phase": "run"}
            after.append(_event(TASK_SCHEDULED, now, seq, Name=retry["name"], Input=retry["input"]))
            _work(db, instance_id, execution, seq, retry["name"], retry["input"], again)
            seq += 1

        state, failure = self._run_orchestrator(row, history + new)
        all_actions = [a for group in state.get("actions") or [] for a in group]
        continue_input: str | None = None
        continued = False
        for action in flatten(all_actions[row["known_actions"] :]):
            kind = action["actionType"]
            if kind in (A_ACTIVITY, A_ACTIVITY_RETRY):
                name, payload = action["functionName"], action.get("input")
                opts = action.get("retryOptions") or {}
                first_retry = None
                if kind == A_ACTIVITY_RETRY:
                    first_retry = {"name": name, "input": payload, "attempt": 1, "phase": "run",
                                   "first_ms": opts["firstRetryIntervalInMilliseconds"],
                                   "max": opts["maxNumberOfAttempts"]}  # fmt: skip
                after.append(_event(TASK_SCHEDULED, now, seq, Name=name, Input=payload))
                _work(db, instance_id, execution, seq, name, payload, first_retry)
                seq += 1
            elif kind == A_TIMER:
                fire_at = parse_ts(action["fireAt"])
                after.append(_event(TIMER_CREATED, now, seq, FireAt=iso(fire_at)))
                fired = _event(TIMER_FIRED, fire_at, TimerId=seq, FireAt=iso(fire_at))
                _inbox(db, instance_id, execution, fired, due=fire_at)
                seq += 1
            elif kind == A_SUB:
                child = action.get("instanceId") or f"{instance_id}:{execution}:{seq:04d}"
                after.append(
                    _event(SUB_CREATED, now, seq, Name=action["functionName"], InstanceId=child,
                           Input=action.get("input"))
                )  # fmt: skip
                if db.execute("SELECT 1 FROM instances WHERE id=?", (child,)).fetchone() is None:
                    self._create(
                        db, action["functionName"], child, action.get("input"), now, (instance_id, seq)
                    )
                seq += 1
            elif kind == A_WAIT_EVENT:
                continue
            elif kind == A_CONTINUE:
                continued, continue_input = True, action.get("input")
            else:
                failure = failure or f"the dev host does not support action type {kind}: {action}"

        done = bool(state.get("isDone"))
        after.append(_event(ORCHESTRATOR_COMPLETED, now))
        self._append(db, instance_id, new + after, start=len(history))
        custom = state.get("customStatus")
        db.execute(
            "UPDATE instances SET status='Running', next_seq=?, known_actions=?, custom_status=?, updated=?"
            " WHERE id=?",
            (seq, len(all_actions), dumps(custom) if custom is not None else None, iso(now), instance_id),
        )
        if failure is not None:
            self._append(db, instance_id, [_event(EXECUTION_FAILED, now, Reason=failure)])
            self._finish(db, row, "Failed", dumps(failure), now)
        elif done and continued:
            self._continue_as_new(db, row, continue_input, now)
        elif done:
            output = state.get("output")
            self._append(db, instance_id, [_event(EXECUTION_COMPLETED, now, Result=json.dumps(output))])
            self._finish(db, row, "Completed", dumps(output), now)

    def _run_orchestrator(self, row: Any, history: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        fn = self.index.orchestrators.get(row["name"])
        if fn is None:
            return {}, f"no orchestrator function named {row['name']!r}"
        context = {
            "history": history,
            "instanceId": row["id"],
            "isReplaying": len(history) > 2,
            "input": row["input"],
            "parentInstanceId": row["parent_id"],
            "upperSchemaVersion": 2,
        }
        try:
            raw = fn.user_function(func.OrchestrationContext(json.dumps(context)))
            return json.loads(raw), None
        except Exception as exc:
            text = str(exc)
            marker = "$OutOfProcData$:"
            if marker in text:
                message, state = text.split(marker, 1)
                return json.loads(state), message.strip() or "orchestrator failed"
            log.exception("orchestrator %s crashed outside the SDK", row["name"])
            return {}, f"{type(exc).__name__}: {exc}"

    def _append(
        self, db: Any, instance_id: str, events: list[dict[str, Any]], start: int | None = None
    ) -> None:
        if start is None:
            start = db.execute(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM history WHERE instance_id=?", (instance_id,)
            ).fetchone()[0]
        db.executemany(
            "INSERT INTO history (instance_id, idx, event) VALUES (?, ?, ?)",
            [(instance_id, start + i, dumps(e)) for i, e in enumerate(events)],
        )

    def _finish(self, db: Any, row: Any, status: str, output_json: str, now: datetime) -> None:
        instance_id = row["id"]
        db.execute(
            "UPDATE instances SET status=?, output=?, updated=? WHERE id=?",
            (status, output_json, iso(now), instance_id),
        )
        db.execute("DELETE FROM inbox WHERE instance_id=?", (instance_id,))
        db.execute("DELETE FROM work WHERE instance_id=?", (instance_id,))
        if row["parent_id"]:
            parent = db.execute("SELECT execution FROM instances WHERE id=?", (row["parent_id"],)).fetchone()
            if parent is None:
                return
            seq = row["parent_seq"]
            if status == "Completed":
                event = _event(SUB_COMPLETED, now, TaskScheduledId=seq, Result=output_json)
            else:
                event = _event(
                    SUB_FAILED, now, TaskScheduledId=seq, Reason=json.loads(output_json), Details=""
                )
            _inbox(db, row["parent_id"], parent["execution"], event)

    def _continue_as_new(self, db: Any, row: Any, input_json: str | None, now: datetime) -> None:
        instance_id, execution = row["id"], row["execution"] + 1
        # External events not yet delivered go to the new execution, after its start (as the Durable
        # Task host does with messages that arrive after ContinueAsNew); timers and activity results
        # of the old execution do not.
        pending = [json.loads(r["event"]) for r in db.execute(
            "SELECT event FROM inbox WHERE instance_id=? ORDER BY id", (instance_id,))]  # fmt: skip
        for table in ("history", "inbox", "work"):
            db.execute(f"DELETE FROM {table} WHERE instance_id=?", (instance_id,))
        db.execute(
            "UPDATE instances SET execution=?, next_seq=0, known_actions=0, input=?, updated=? WHERE id=?",
            (execution, input_json, iso(now), instance_id),
        )
        started = _event(EXECUTION_STARTED, now, Name=row["name"], Version="", Input=input_json)
        _inbox(db, instance_id, execution, started)
        for event in pending:
            if event["EventType"] == EVENT_RAISED:
                _inbox(db, instance_id, execution, event)


def _inbox(db: Any, instance_id: str, execution: int, event: dict[str, Any], due: datetime | None = None,
           retry: dict[str, Any] | None = None) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO inbox (instance_id, execution, event, due, retry) VALUES (?, ?, ?, ?, ?)",
        (instance_id, execution, dumps(event), iso(due) if due else None, dumps(retry) if retry else None),
    )


def _work(db: Any, instance_id: str, execution: int, seq: int, name: str, payload: str | None,
          retry: dict[str, Any] | None) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO work (instance_id, execution, seq, name, input, retry) VALUES (?, ?, ?, ?, ?, ?)",
        (instance_id, execution, seq, name, payload, dumps(retry) if retry else None),
    )


def status_json(row: Any, show_input: bool) -> dict[str, Any]:
    """An `instances` row as the management API's status JSON (without history)."""
    body: dict[str, Any] = {
        "name": row["name"],
        "instanceId": row["id"],
        "runtimeStatus": row["status"],
        "customStatus": json.loads(row["custom_status"]) if row["custom_status"] else None,
        "output": json.loads(row["output"]) if row["output"] else None,
        "createdTime": row["created"][:19] + "Z",
        "lastUpdatedTime": row["updated"][:19] + "Z",
    }
    if show_input:
        body["input"] = _loads_or_text(row["input"])
    return body


_LIST_COLUMNS = "id, name, status, custom_status, output, created, updated"


def list_sql(
    query: InstanceQuery, after: tuple[str, str] | None, limit: int, show_input: bool
) -> tuple[str, list[Any]]:
    """The SELECT for one page: filtered, ordered and limited in SQLite, walking the
    `instances_created` index on (created, id) from the keyset position `after`."""
    where: list[str] = []
    params: list[Any] = []
    lower = None if query.created_from is None else _created_key(query.created_from, "createdTimeFrom")
    if after is not None and lower is not None and after[0] < lower:
        after = None  # created >= lower already implies (created, id) > after
    if after is not None:
        # (created, id) > after implies created >= lower. One lower bound only, so that SQLite seeks
        # the index to the page's start rather than to createdTimeFrom for every page.
        where.append("(created, id) > (?, ?)")
        params.extend(after)
    elif lower is not None:
        where.append("created >= ?")
        params.append(lower)
    if query.created_to is not None:
        where.append("created <= ?")
        params.append(_created_key(query.created_to, "createdTimeTo"))
    if query.runtime_status:
        where.append(f"status IN ({', '.join('?' * len(query.runtime_status))})")
        params.extend(query.runtime_status)
    if query.instance_id_prefix:
        # Not LIKE / GLOB: LIKE ignores ASCII case and both treat some characters as wildcards.
        where.append("substr(id, 1, ?) = ?")
        params.extend((len(query.instance_id_prefix), query.instance_id_prefix))
    columns = _LIST_COLUMNS + (", input" if show_input else "")
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {columns} FROM instances{condition} ORDER BY created, id LIMIT ?", [*params, limit]


def _created_key(ts: datetime, field: str) -> str:
    """A bound in the stored `created` format (iso(), zero-padded), so text order is time order."""
    try:
        utc = (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts).astimezone(UTC)
    except OverflowError:
        raise BadQuery(field, f"{field} is out of range once converted to UTC") from None
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# The continuation token: base64url (unpadded) of {"v": 1, "c": <created>, "i": <instance id>}, the
# (created, id) key of the last instance of the page. Opaque to clients, and checked strictly: any
# other text is answered 400, never a 500 or a silently restarted listing.
_TOKEN_VERSION = 1
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]{1,8000}")
_CREATED_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def encode_continuation(created: str, instance_id: str) -> str:
    raw = dumps({"v": _TOKEN_VERSION, "c": created, "i": instance_id}).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_continuation(token: str) -> tuple[str, str]:
    """The (created, instance id) key a continuation token names; BadQuery if it is not a token
    this host issues."""
    bad = BadQuery(
        CONTINUATION_HEADER,
        "not a continuation token from this API; send back the x-ms-continuation-token header of"
        " the previous page unchanged, or none for the first page",
    )
    if not _TOKEN_TEXT.fullmatch(token):
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8"))
    except (ValueError, RecursionError):  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise bad from None
    if not (
        isinstance(data, dict)
        and data.keys() == {"v", "c", "i"}
        and type(data["v"]) is int
        and data["v"] == _TOKEN_VERSION
        and isinstance(data["c"], str)
        and _CREATED_TEXT.fullmatch(data["c"])
        and isinstance(data["i"], str)
    ):
        raise bad
    try:
        datetime.strptime(data["c"], "%Y-%m-%dT%H:%M:%S.%fZ")
        data["i"].encode("utf-8")  # JSON may spell lone surrogates, which SQLite cannot bind
    except ValueError:  # UnicodeEncodeError is one
        raise bad from None
    return data["c"], data["i"]


def _loads_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
