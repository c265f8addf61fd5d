"""Timer triggers offline: NCRONTAB and TimeSpan schedules, run as the Functions host's timer extension does.

Schedules (after `%SETTING%` binding expressions are resolved from the app settings):
- NCRONTAB, six fields `{second} {minute} {hour} {day} {month} {day-of-week}` (the extension parses
  with seconds, so the five-field crontab form is rejected, as in Azure). Each field takes `*`,
  numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (a to the field's maximum), and lists
  `a,b`. Months and days of the week also take names or their prefixes (`Jan`, `mon-fri`),
  day-of-week is 0-6 with 0 = Sunday, and day-of-month and day-of-week must *both* match (NCrontab
  ANDs them; classic cron ORs them). Evaluated in UTC, Azure's default time zone.
- TimeSpan: `hh:mm:ss`, `hh:mm`, `d.hh:mm:ss`, and `dd:hh:mm` when the first number is 24 or more
  (as documented for the timer trigger). The next occurrence is the last one plus the interval.

Runs follow the extension's TimerListener and ScheduleMonitor:
- the schedule status (Last, Next, LastUpdated) of every monitored timer is kept in the dev host's
  SQLite store (table `timer_status`). A timer is monitored unless its binding says
  `useMonitor: false` or it fires more than once a minute (several seconds in its second field, a
  TimeSpan under a minute), as in Azure;
- at startup a monitored timer whose recorded Next is in the past (the host was down, or died
  mid-invocation: the status is written only after the function returns) runs once, with
  `past_due=True`; otherwise `runOnStartup: true` runs it once. A changed schedule is not past due;
- the function gets an `azure.functions.TimerRequest` decoded by the SDK's own converter from the
  host's JSON (`IsPastDue`, `ScheduleStatus`, `Schedule`) and, with a `durableClient` binding, the
  same client binding JSON the HTTP and blob triggers get;
- a failing function is logged and its schedule goes on (no retry); after each invocation Next is
  the first occurrence after the invocation time, so missed occurrences collapse into one run.

Each timer has its own loop, so a slow function delays only its own next run; a loop wakes at least
every `max_sleep_s` to notice a clock change (a suspended laptop). Tests drive the runner with
`start(now)` / `tick(now)`, or `run()` with an injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import re
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from azure.functions import meta
from azure.functions.timer import TimerRequest, TimerRequestConverter

from devhost.engine import utcnow
from devhost.functions import Function, FunctionIndex, resolve_setting_expressions
from devhost.store import Store

log = logging.getLogger("devhost.timers")

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")  # fmt: skip
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# (name, min, max, value names) for each NCRONTAB field, in expression order.
FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 6, DAYS),
)
MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
SEARCH_YEARS = 400  # the Gregorian calendar repeats every 400 years


def _utc(dt: datetime) -> datetime:
    """Aware datetimes in UTC; a naive one is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _parse_field(text: str, lo: int, hi: int, names: tuple[str, ...]) -> tuple[int, ...]:
    """The sorted values one NCRONTAB field allows (NCrontab's syntax; a reversed range is swapped)."""

    def value(token: str) -> int:
        if token.isascii() and token.isdigit():
            v = int(token)
            if not lo <= v <= hi:
                raise ValueError(f"{v} is outside {lo}-{hi}")
            return v
        if names and token.isalpha():
            for i, full in enumerate(names):
                if full.lower().startswith(token.lower()):
                    return lo + i
            raise ValueError(f"{token!r} is not a known name ({', '.join(n[:3] for n in names)})")
        raise ValueError(f"{token!r} is not a number in {lo}-{hi}")

    values: set[int] = set()
    for item in text.split(","):
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise ValueError(f"step {step_text!r} in {item!r} is not a positive number")
            step = int(step_text)
        if not body:
            raise ValueError(f"empty value in {text!r}")
        if body == "*":
            start, end = lo, hi
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = sorted((value(first), value(last)))  # NCrontab swaps a reversed range
        else:
            start = value(body)
            end = hi if slash else start
        values.update(range(start, end + 1, step))
    return tuple(sorted(values))


@dataclass(frozen=True)
class CronSchedule:
    """A six-field NCRONTAB schedule; `next_after` is the first occurrence strictly after a time."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != len(FIELDS):
            raise ValueError(
                f"invalid NCRONTAB schedule {expression!r}: it needs 6 fields "
                f"{{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}, found {len(parts)}"
            )
        parsed = []
        for text, (name, lo, hi, names) in zip(parts, FIELDS, strict=True):
            try:
                parsed.append(_parse_field(text, lo, hi, names))
            except ValueError as exc:
                raise ValueError(
                    f"invalid NCRONTAB schedule {expression!r}: {name} field {text!r}: {exc}"
                ) from None
        seconds, minutes, hours, days, months, dows = parsed
        if not any(d <= MAX_DAYS[m - 1] for m in months for d in days):
            raise ValueError(f"invalid NCRONTAB schedule {expression!r}: day and month fields never coincide")
        return cls(expression, seconds, minutes, hours, days, months, frozenset(dows))

    @property
    def sub_minute(self) -> bool:
        return len(self.seconds) > 1

    def next_after(self, dt: datetime) -> datetime:
        t = _utc(dt).replace(microsecond=0) + timedelta(seconds=1)
        first_day = t.date()
        for year in range(t.year, t.year + SEARCH_YEARS):
            for month in self.months:
                if (year, month) < (t.year, t.month):
                    continue
                month_days = calendar.monthrange(year, month)[1]
                for day in self.days:
                    if day > month_days:
                        break
                    d = date(year, month, day)
                    if d < first_day or (d.isoweekday() % 7) not in self.days_of_week:
                        continue
                    at = self._time_from(t.time() if d == first_day else time(0))
                    if at is not None:
                        return datetime.combine(d, at, tzinfo=UTC)
        raise ValueError(f"NCRONTAB schedule {self.expression!r} has no occurrence after {t.isoformat()}")

    def _time_from(self, start: time) -> time | None:
        """The first time of day at or after `start` that the schedule's time fields allow."""
        for h in self.hours[bisect_left(self.hours, start.hour) :]:
            m_from = start.minute if h == start.hour else 0
            for m in self.minutes[bisect_left(self.minutes, m_from) :]:
                s_from = start.second if (h, m) == (start.hour, start.minute) else 0
                i = bisect_left(self.seconds, s_from)
                if i < len(self.seconds):
                    return time(h, m, self.seconds[i])
        return None


_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d+):(\d+)(?::(\d+))?")


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule (the extension's ConstantSchedule): every `interval` from the last run."""

    expression: str
    interval: timedelta

    @classmethod
    def parse(cls, expression: str) -> IntervalSchedule:
        m = _TIMESPAN.fullmatch(expression.strip())
        if m is None:
            raise ValueError(
                f"invalid TimeSpan schedule {expression!r}: expected hh:mm:ss, hh:mm or d.hh:mm:ss"
            )
        days_text, a, b, c = m.groups()
        if days_text is None and c is not None and int(a) >= 24:
            days, hours, minutes, seconds = int(a), int(b), int(c), 0  # documented: dd:hh:mm
        else:
            days, hours, minutes, seconds = int(days_text or 0), int(a), int(b), int(c or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise ValueError(
                f"invalid TimeSpan schedule {expression!r}: hours 0-23, minutes and seconds 0-59"
            )
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if not interval:
            raise ValueError(f"invalid TimeSpan schedule {expression!r}: the interval must not be zero")
        return cls(expression, interval)

    @property
    def sub_minute(self) -> bool:
        return self.interval < timedelta(minutes=1)

    def next_after(self, dt: datetime) -> datetime:
        return _utc(dt) + self.interval


Schedule = CronSchedule | IntervalSchedule


def parse_schedule(expression: str) -> Schedule:
    """A timer trigger schedule: NCRONTAB when it has fields separated by spaces, else a TimeSpan."""
    text = expression.strip()
    if not text:
        raise ValueError("empty timer schedule")
    if len(text.split()) > 1:
        return CronSchedule.parse(text)
    if ":" not in text:
        raise ValueError(
            f"timer schedule {text!r} is neither NCRONTAB ({{second}} {{minute}} {{hour}} {{day}} {{month}}"
            " {day-of-week}) nor a TimeSpan (hh:mm:ss)"
        )
    return IntervalSchedule.parse(text)


@dataclass(frozen=True)
class ScheduleStatus:
    """What the extension's schedule monitor records; `last`/`last_updated` None = never."""

    last: datetime | None
    next: datetime
    last_updated: datetime | None

    def as_json(self) -> dict[str, str]:
        never = datetime.min.replace(tzinfo=UTC)  # .NET's default(DateTime)
        return {
            "Last": (self.last or never).isoformat(),
            "Next": self.next.isoformat(),
            "LastUpdated": (self.last_updated or never).isoformat(),
        }


@dataclass
class Timer:
    function: Function
    param: str
    schedule: Schedule
    run_on_startup: bool
    use_monitor: bool
    status: ScheduleStatus | None = None  # set by start

    @property
    def name(self) -> str:
        return self.function.name


class TimerRunner:
    def __init__(
        self,
        store: Store,
        index: FunctionIndex,
        env: dict[str, str],
        binding_json: str,
        clock: Callable[[], datetime] = utcnow,
        max_sleep_s: float = 1.0,
    ) -> None:
        self.store = store
        self.binding_json = binding_json
        self.clock = clock
        self.max_sleep_s = max_sleep_s
        self.timers: list[Timer] = []
        self.errors: dict[str, str] = {}  # functions disabled by a bad schedule, as the host does
        for fn in index.timers:
            b = fn.binding("timerTrigger")
            assert b is not None
            try:
                schedule = parse_schedule(resolve_setting_expressions(b["schedule"], env))
            except (KeyError, ValueError) as exc:
                self.errors[fn.name] = str(exc.args[0])
                log.error("timer trigger %s is disabled: %s", fn.name, exc.args[0])
                continue
            monitor = b.get("useMonitor") is not False and not schedule.sub_minute
            self.timers.append(Timer(fn, b["name"], schedule, bool(b.get("runOnStartup")), monitor))
        with store.tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS timer_status"
                " (function TEXT PRIMARY KEY, last TEXT, next TEXT NOT NULL, last_updated TEXT)"
            )

    # -- driving ------------------------------------------------------------------------------

    async def run(
        self,
        on_fired: Callable[[], None] = lambda: None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """Start every timer and run its schedule until cancelled (one task per timer)."""
        async with asyncio.TaskGroup() as group:
            for timer in self.timers:
                group.create_task(self._run_timer(timer, on_fired, sleep), name=f"timer:{timer.name}")

    async def start(self, now: datetime | None = None) -> list[str]:
        """Startup for every timer (past-due check, runOnStartup); return the names it invoked."""
        now = now or self.clock()
        fired = await asyncio.gather(*(self._start(t, now) for t in self.timers))
        return [t.name for t, f in zip(self.timers, fired, strict=True) if f]

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Invoke every started timer whose next occurrence is due at `now`; return their names."""
        now = now or self.clock()
        due = [t for t in self.timers if t.status is not None and t.status.next <= now]
        await asyncio.gather(*(self._invoke(t, now) for t in due))
        return [t.name for t in due]

    def next_due(self) -> datetime | None:
        nexts = [t.status.next for t in self.timers if t.status is not None]
        return min(nexts) if nexts else None

    async def _run_timer(
        self, timer: Timer, on_fired: Callable[[], None], sleep: Callable[[float], Awaitable[Any]]
    ) -> None:
        while True:
            try:
                now = self.clock()
                if timer.status is None:
                    if await self._start(timer, now):
                        on_fired()
                    continue
                if timer.status.next <= now:
                    await self._invoke(timer, now)
                    on_fired()
                    continue
                delay = min(self.max_sleep_s, (timer.status.next - now).total_seconds())
            except Exception:  # the store, not the function (that is caught in _invoke)
                log.exception("timer %s: scheduling failed; will retry", timer.name)
                delay = self.max_sleep_s
            await sleep(delay)

    # -- the extension's TimerListener --------------------------------------------------------

    async def _start(self, timer: Timer, now: datetime) -> bool:
        past_due = False
        if timer.use_monitor:
            timer.status, past_due = self._check_past_due(timer, now)
        else:
            timer.status = ScheduleStatus(None, timer.schedule.next_after(now), None)
        upcoming, at = [], timer.status.next
        for _ in range(3):
            upcoming.append(at.isoformat())
            at = timer.schedule.next_after(at)
        log.info("timer %s (%s): next %s", timer.name, timer.schedule.expression, ", ".join(upcoming))
        if past_due:
            log.info(
                "timer %s is past due (missed %s); running it now", timer.name, timer.status.next.isoformat()
            )
            await self._invoke(timer, now, past_due=True)
        elif timer.run_on_startup:
            log.info("timer %s runs on startup", timer.name)
            await self._invoke(timer, now, on_startup=True)
        return past_due or timer.run_on_startup

    def _check_past_due(self, timer: Timer, now: datetime) -> tuple[ScheduleStatus, bool]:
        """The ScheduleMonitor's CheckPastDue: the recorded status (initialised, or reset after a
        schedule change) and whether its Next has passed."""
        status = self._load(timer.name)
        if status is None:
            status = ScheduleStatus(None, timer.schedule.next_after(now), now)
            self._save(timer.name, status)
        else:
            basis = status.last or status.last_updated or now
            expected = timer.schedule.next_after(basis)
            if expected != status.next:  # the schedule changed since Next was computed
                if now > expected:
                    expected, basis = timer.schedule.next_after(now), now
                status = ScheduleStatus(None, expected, basis)
                self._save(timer.name, status)
        return status, now > status.next

    async def _invoke(
        self, timer: Timer, now: datetime, past_due: bool = False, on_startup: bool = False
    ) -> None:
        assert timer.status is not None
        kwargs: dict[str, Any] = {timer.param: self._request(timer, past_due)}
        if timer.function.client_param:
            kwargs[timer.function.client_param] = self.binding_json
        try:
            await timer.function.acall(**kwargs)
        except Exception:
            log.exception("timer trigger %s failed", timer.name)
        # As the listener: a run that woke a little early counts as the scheduled occurrence.
        at = now
        if not past_due and not on_startup and timer.status.next > now:
            at = timer.status.next
        timer.status = ScheduleStatus(at, timer.schedule.next_after(at), at)
        if timer.use_monitor:
            self._save(timer.name, timer.status)

    def _request(self, timer: Timer, past_due: bool) -> TimerRequest:
        """The TimerRequest the Python worker would build from the host's timer JSON."""
        assert timer.status is not None
        payload = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": timer.status.as_json() if timer.use_monitor else None,
            "IsPastDue": past_due,
        }
        request = TimerRequestConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)
        assert isinstance(request, TimerRequest)
        return request

    # -- the schedule monitor's store ---------------------------------------------------------

    def _load(self, name: str) -> ScheduleStatus | None:
        with self.store.read() as db:
            row = db.execute("SELECT * FROM timer_status WHERE function=?", (name,)).fetchone()
        if row is None:
            return None

        def ts(text: str | None) -> datetime | None:
            return datetime.fromisoformat(text) if text else None

        nxt = ts(row["next"])
        assert nxt is not None
        return ScheduleStatus(ts(row["last"]), nxt, ts(row["last_updated"]))

    def _save(self, name: str, status: ScheduleStatus) -> None:
        def ts(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        with self.store.tx() as db:
            db.execute(
                "INSERT INTO timer_status (function, last, next, last_updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (function) DO UPDATE SET"
                " last=excluded.last, next=excluded.next, last_updated=excluded.last_updated",
                (name, ts(status.last), status.next.isoformat(), ts(status.last_updated)),
            )
