"""Timer triggers in the dev host: the NCRONTAB/TimeSpan parser, the runner's schedule-monitor semantics
(past-due catch-up, runOnStartup, schedule changes, failures), driven deterministically with
`start(now)`/`tick(now)` or an injected clock and sleep, and end to end through the durable client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
from aiohttp import web

from devhost.engine import Engine
from devhost.functions import Function, FunctionIndex
from devhost.host import Host, _bind_durable_client_session, _close_durable_client_session
from devhost.http import build_app, client_binding
from devhost.store import Store
from devhost.timers import CronSchedule, IntervalSchedule, TimerRunner, parse_schedule
from testing.apps import timer_app
from testing.devhost_in_process import Clock, drain, serving
from testing.devhost_subprocess import free_port

NEVER = "0001-01-01T00:00:00+00:00"
YEARLY = "0 0 0 1 1 *"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- the NCRONTAB parser ---------------------------------------------------------------------------

NEXT_TIMES = [
    # (expression, after, next) — checked by hand against a calendar
    ("0 */30 * * * *", "2024-01-01T10:14:59", "2024-01-01T10:30:00"),
    ("0 */30 * * * *", "2024-01-01T10:30:00", "2024-01-01T11:00:00"),  # strictly after
    ("0 */30 * * * *", "2023-12-31T23:45:00", "2024-01-01T00:00:00"),  # year rollover
    ("0 0 * * * *", "2024-01-01T10:00:00.500000", "2024-01-01T11:00:00"),
    ("0 0 * * * *", "2024-02-29T23:59:59", "2024-03-01T00:00:00"),  # leap day to March
    ("*/5 * * * * *", "2024-01-01T10:00:03", "2024-01-01T10:00:05"),
    ("*/5 * * * * *", "2024-01-01T10:00:57", "2024-01-01T10:01:00"),
    ("*/5 * * * * *", "2024-01-01T23:59:55", "2024-01-02T00:00:00"),
    ("15,45 * * * * *", "2024-01-01T10:00:45", "2024-01-01T10:01:15"),
    ("0 0 0 31 * *", "2024-04-15T00:00:00", "2024-05-31T00:00:00"),  # April has no 31st
    ("0 0 0 31 * *", "2024-01-31T00:00:00", "2024-03-31T00:00:00"),  # nor February
    ("0 0 12 29 2 *", "2024-03-01T00:00:00", "2028-02-29T12:00:00"),  # the next leap year
    ("0 0 0 1 * *", "2024-12-15T08:00:00", "2025-01-01T00:00:00"),  # month and year rollover
    ("0 0 0 1 1 *", "2024-01-01T00:00:00", "2025-01-01T00:00:00"),
    ("59 59 23 31 12 *", "2024-12-31T23:59:58", "2024-12-31T23:59:59"),
    ("0 30 9 * * 1-5", "2024-06-07T09:29:59", "2024-06-07T09:30:00"),  # Friday
    ("0 30 9 * * 1-5", "2024-06-07T10:00:00", "2024-06-10T09:30:00"),  # … then Monday
    ("0 0 0 * * 0", "2024-06-07T12:00:00", "2024-06-09T00:00:00"),  # 0 = Sunday
    ("0 0 0 * * 6", "2024-06-08T00:00:00", "2024-06-15T00:00:00"),  # Saturday to Saturday
    ("0 0 0 13 * 5", "2024-01-01T00:00:00", "2024-09-13T00:00:00"),  # day AND weekday: Friday 13th
    ("0 0 8-18/4 * * *", "2024-01-01T12:00:01", "2024-01-01T16:00:00"),  # 8, 12, 16
    ("0 0 8-18/4 * * *", "2024-01-01T16:00:00", "2024-01-02T08:00:00"),
    ("0 5/20 * * * *", "2024-01-01T10:46:00", "2024-01-01T11:05:00"),  # 5, 25, 45
    ("0 0 9 * jan,JUL mon", "2024-01-30T10:00:00", "2024-07-01T09:00:00"),  # names
    ("0 0 0 * * 5-1", "2024-06-07T12:00:00", "2024-06-10T00:00:00"),  # NCrontab reads 5-1 as 1-5
]


@pytest.mark.parametrize(("expression", "after", "expected"), NEXT_TIMES)
def test_next_after(expression: str, after: str, expected: str):
    nxt = parse_schedule(expression).next_after(utc(after))
    assert nxt == utc(expected)
    assert nxt.tzinfo == UTC


def test_next_after_converts_to_utc():
    noon_plus_2 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert parse_schedule("0 0 * * * *").next_after(noon_plus_2) == utc("2024-01-01T11:00:00")
    assert parse_schedule("0 0 * * * *").next_after(datetime(2024, 1, 1, 10, 30)) == utc(
        "2024-01-01T11:00:00"
    )


def test_field_syntax():
    s = CronSchedule.parse("1-10/3,20,*/25 */15 0-23/6 1,15 jan-Mar,dec Sun,SAT")
    assert s.seconds == (0, 1, 4, 7, 10, 20, 25, 50)
    assert s.minutes == (0, 15, 30, 45)
    assert s.hours == (0, 6, 12, 18)
    assert s.days == (1, 15)
    assert s.months == (1, 2, 3, 12)
    assert s.days_of_week == {0, 6}
    assert CronSchedule.parse("0 0 0 * * Thu,tuesday").days_of_week == {2, 4}  # NCrontab: name prefixes
    assert CronSchedule.parse("0 0 0 * * 5-1").days_of_week == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 */30 * * *", "needs 6 fields"),  # the 5-field crontab form, as Azure rejects it
        ("0 0 0 * * * *", "needs 6 fields"),
        ("60 * * * * *", "second field '60': 60 is outside 0-59"),
        ("0 60 * * * *", "minute field '60'"),
        ("0 0 24 * * *", "hour field '24'"),
        ("0 0 0 0 * *", "day field '0'"),
        ("0 0 0 32 * *", "day field '32'"),
        ("0 0 0 * 13 *", "month field '13'"),
        ("0 0 0 * * 7", "day-of-week field '7'"),
        ("*/0 * * * * *", "second field '*/0': step '0'"),
        ("0 */x * * * *", "minute field '*/x'"),
        ("0 0 0 * Foo *", "month field 'Foo': 'Foo' is not a known name"),
        ("0 0 0 * * someday", "day-of-week field 'someday'"),
        ("0 0 mon * * *", "hour field 'mon'"),  # names only in month and day-of-week
        ("a b c d e f", "second field 'a'"),
        ("0 0 0 1-x * *", "day field '1-x'"),
        ("0 0 0 1,,2 * *", "day field '1,,2': empty value"),
        ("0 0 0 -5 * *", "day field '-5'"),
        ("0 0 0 30 2 *", "day and month fields never coincide"),
        ("0 0 0 31 4,6,9,11 *", "never coincide"),
        ("", "empty timer schedule"),
        ("hourly", "neither NCRONTAB"),
    ],
)
def test_invalid_expressions_name_the_field(expression: str, message: str):
    with pytest.raises(ValueError) as err:
        parse_schedule(expression)
    assert message in str(err.value)


def _matches(s: CronSchedule, t: datetime) -> bool:
    return (
        t.month in s.months
        and t.day in s.days
        and t.isoweekday() % 7 in s.days_of_week
        and t.hour in s.hours
        and t.minute in s.minutes
        and t.second in s.seconds
    )


def _brute_next(s: CronSchedule, after: datetime) -> datetime:
    """The obvious search: skip a whole day, hour or minute that cannot match, else the next second."""
    t = after.replace(microsecond=0) + timedelta(seconds=1)
    while not _matches(s, t):
        if t.month not in s.months or t.day not in s.days or t.isoweekday() % 7 not in s.days_of_week:
            t = (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        elif t.hour not in s.hours:
            t = (t + timedelta(hours=1)).replace(minute=0, second=0)
        elif t.minute not in s.minutes:
            t = (t + timedelta(minutes=1)).replace(second=0)
        else:
            t += timedelta(seconds=1)
    return t


def _random_field(rng: random.Random, lo: int, hi: int) -> str:
    def one() -> str:
        a, b = sorted(rng.sample(range(lo, hi + 1), 2))
        return rng.choice(
            ["*", str(rng.randint(lo, hi)), f"{a}-{b}", f"*/{rng.randint(1, 9)}",
             f"{a}-{b}/{rng.randint(1, 5)}", f"{a}/{rng.randint(2, 9)}"]
        )  # fmt: skip

    return ",".join(one() for _ in range(rng.choice([1, 1, 1, 2, 3])))


def test_next_after_agrees_with_brute_force():
    rng = random.Random(20240601)
    checked = 0
    while checked < 1000:
        fields = [
            _random_field(rng, lo, hi) for lo, hi in ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
        ]
        try:
            s = CronSchedule.parse(" ".join(fields))
        except ValueError:
            continue  # a day/month combination that never occurs
        after = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10 * 365 * 86400))
        assert s.next_after(after) == _brute_next(s, after), s.expression
        checked += 1


# -- TimeSpan schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "interval"),
    [
        ("00:00:10", timedelta(seconds=10)),
        ("01:00:00", timedelta(hours=1)),
        ("01:30", timedelta(hours=1, minutes=30)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("24:00:00", timedelta(days=24)),  # documented: dd:hh:mm once the first number is 24 or more
        ("25:06:30", timedelta(days=25, hours=6, minutes=30)),
    ],
)
def test_timespan_schedules(expression: str, interval: timedelta):
    s = parse_schedule(expression)
    assert isinstance(s, IntervalSchedule) and s.interval == interval
    assert s.next_after(utc("2024-01-01T10:00:00.250000")) == utc("2024-01-01T10:00:00.250000") + interval


@pytest.mark.parametrize("expression", ["00:00:00", "00:61:00", "00:00:60", "23:59:60", "1:2:3:4", "1.2"])
def test_invalid_timespans(expression: str):
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_schedule(expression)


# -- the runner, driven with start(now) / tick(now) ------------------------------------------------

Calls = list[tuple[str, func.TimerRequest]]


def timer_function(
    name: str,
    schedule: str,
    calls: Calls,
    run_on_startup: bool | None = None,
    use_monitor: bool | None = None,
    fail: bool = False,
) -> Function:
    binding: dict[str, Any] = {
        "type": "timerTrigger",
        "direction": "IN",
        "name": "timer",
        "schedule": schedule,
    }
    if run_on_startup is not None:
        binding["runOnStartup"] = run_on_startup
    if use_monitor is not None:
        binding["useMonitor"] = use_monitor

    def user(timer: func.TimerRequest) -> None:
        calls.append((name, timer))
        if fail:
            raise RuntimeError(f"{name} failed on purpose")

    return Function(name, [binding], user)


class Runners:
    """Runners over one SQLite file; `restart` closes the previous store first (the host went down)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store: Store | None = None

    def restart(self, *functions: Function, env: dict[str, str] | None = None, **kw: Any) -> TimerRunner:
        if self.store is not None:
            self.store.close()
        self.store = Store(self.path)
        return TimerRunner(self.store, FunctionIndex(timers=list(functions)), env or {}, "{}", **kw)


@pytest.fixture
def runners(tmp_path):
    r = Runners(tmp_path / "host.sqlite")
    yield r
    if r.store is not None:
        r.store.close()


def start(runner: TimerRunner, now: str) -> list[str]:
    return asyncio.run(runner.start(utc(now)))


def tick(runner: TimerRunner, now: str) -> list[str]:
    return asyncio.run(runner.tick(utc(now)))


def test_setting_expressions_are_resolved(runners):
    calls: Calls = []
    runner = runners.restart(timer_function("t", "%HOURLY%", calls), env={"HOURLY": "0 0 * * * *"})
    assert runner.timers[0].schedule.expression == "0 0 * * * *"
    assert start(runner, "2024-01-01T10:15:00") == []
    assert runner.next_due() == utc("2024-01-01T11:00:00")


def test_a_bad_schedule_disables_only_that_function(runners, caplog):
    calls: Calls = []
    runner = runners.restart(
        timer_function("ok", "%OK%", calls),
        timer_function("unset", "%NOPE%", calls),
        timer_function("bad", "0 61 * * * *", calls),
        env={"OK": "0 0 * * * *"},
    )
    assert [t.name for t in runner.timers] == ["ok"]
    assert "%NOPE%" in runner.errors["unset"]
    assert "minute field '61'" in runner.errors["bad"]
    assert "timer trigger bad is disabled" in caplog.text


def test_tick_fires_when_due_with_the_schedule_status(runners):
    calls: Calls = []
    runner = runners.restart(timer_function("t", "0 */30 * * * *", calls))
    assert start(runner, "2024-01-01T10:15:00") == []
    assert tick(runner, "2024-01-01T10:29:59") == []
    assert tick(runner, "2024-01-01T10:30:00") == ["t"]
    assert tick(runner, "2024-01-01T10:30:00.500000") == []  # once per occurrence
    [(_, request)] = calls
    assert isinstance(request, func.TimerRequest) and request.past_due is False
    # The status as the function sees it: recorded before this run (never run; Next = this run).
    assert request.schedule_status == {
        "Last": NEVER,
        "Next": "2024-01-01T10:30:00+00:00",
        "LastUpdated": "2024-01-01T10:15:00+00:00",
    }
    assert request.schedule == {"AdjustForDST": True}
    assert runner.next_due() == utc("2024-01-01T11:00:00")
    assert tick(runner, "2024-01-01T11:00:00") == ["t"]
    assert calls[1][1].schedule_status["Last"] == "2024-01-01T10:30:00+00:00"


def test_a_late_tick_runs_missed_occurrences_once(runners):
    calls: Calls = []
    runner = runners.restart(timer_function("t", "0 */30 * * * *", calls))
    start(runner, "2024-01-01T10:15:00")
    assert tick(runner, "2024-01-01T13:07:00") == ["t"]  # 10:30 … 13:00 missed while running: one run
    assert calls[0][1].past_due is False  # as the listener: past due is a startup verdict
    assert runner.next_due() == utc("2024-01-01T13:30:00")


def test_run_on_startup(runners):
    calls: Calls = []
    runner = runners.restart(
        timer_function("boot", YEARLY, calls, run_on_startup=True),
        timer_function("quiet", YEARLY, calls, run_on_startup=False),
        timer_function("default", YEARLY, calls),
    )
    assert start(runner, "2024-06-01T10:00:00") == ["boot"]
    assert [(n, r.past_due) for n, r in calls] == [("boot", False)]
    assert runner.timers[0].status.next == utc("2025-01-01T00:00:00")
    # Every start runs it again (it is not a past-due run).
    runner = runners.restart(timer_function("boot", YEARLY, calls, run_on_startup=True))
    assert start(runner, "2024-06-01T10:05:00") == ["boot"]


def test_past_due_after_downtime_runs_once(runners):
    calls: Calls = []
    fn = timer_function("t", "0 */30 * * * *", calls)
    start(runners.restart(fn), "2024-01-01T10:15:00")  # records Next = 10:30, then the host goes down

    runner = runners.restart(fn)
    assert start(runner, "2024-01-01T12:05:00") == ["t"]
    [(_, request)] = calls
    assert request.past_due is True
    assert request.schedule_status["Next"] == "2024-01-01T10:30:00+00:00"  # the missed occurrence
    assert runner.next_due() == utc("2024-01-01T12:30:00")

    # Up again a few minutes later: the past-due run was recorded, nothing to catch up.
    runner = runners.restart(fn)
    assert start(runner, "2024-01-01T12:10:00") == []
    assert runner.next_due() == utc("2024-01-01T12:30:00")


def test_a_completed_run_is_not_past_due_after_a_restart(runners):
    calls: Calls = []
    fn = timer_function("t", "0 */30 * * * *", calls)
    runner = runners.restart(fn)
    start(runner, "2024-01-01T10:15:00")
    assert tick(runner, "2024-01-01T10:30:00") == ["t"]
    runner = runners.restart(fn)
    assert start(runner, "2024-01-01T10:45:00") == []
    assert runner.next_due() == utc("2024-01-01T11:00:00")


def test_a_run_interrupted_by_shutdown_is_past_due_at_the_next_start(runners):
    calls: Calls = []

    async def cancelled(timer: func.TimerRequest) -> None:
        calls.append(("t", timer))
        raise asyncio.CancelledError  # the host's task was cancelled mid-invocation

    binding = {"type": "timerTrigger", "direction": "IN", "name": "timer", "schedule": "0 */30 * * * *"}
    runner = runners.restart(Function("t", [binding], cancelled))
    start(runner, "2024-01-01T10:15:00")
    with pytest.raises(asyncio.CancelledError):
        tick(runner, "2024-01-01T10:30:00")

    runner = runners.restart(timer_function("t", "0 */30 * * * *", calls))
    assert start(runner, "2024-01-01T10:31:00") == ["t"]
    assert calls[-1][1].past_due is True  # at least once, as in Azure


def test_past_due_wins_over_run_on_startup(runners):
    calls: Calls = []
    fn = timer_function("t", "0 */30 * * * *", calls, run_on_startup=True)
    start(runners.restart(fn), "2024-01-01T10:15:00")
    assert [r.past_due for _, r in calls] == [False]
    assert start(runners.restart(fn), "2024-01-01T11:40:00") == ["t"]
    assert [r.past_due for _, r in calls] == [False, True]  # one run at startup, not two


def test_a_changed_schedule_is_not_past_due(runners):
    calls: Calls = []
    start(runners.restart(timer_function("t", "0 0 * * * *", calls)), "2024-01-01T10:15:00")  # Next 11:00
    runner = runners.restart(timer_function("t", "0 */30 * * * *", calls))
    assert start(runner, "2024-01-01T12:20:00") == []
    assert runner.next_due() == utc("2024-01-01T12:30:00")


def test_unmonitored_timers_keep_no_status(runners):
    calls: Calls = []
    fns = [
        timer_function("off", "0 */30 * * * *", calls, use_monitor=False),
        timer_function("fast_cron", "*/5 * * * * *", calls),  # several runs a minute: not monitored
        timer_function("fast_span", "00:00:30", calls),
        timer_function("slow_span", "00:05:00", calls),
    ]
    runner = runners.restart(*fns)
    assert [t.use_monitor for t in runner.timers] == [False, False, False, True]
    start(runner, "2024-01-01T10:15:00")
    assert sorted(tick(runner, "2024-01-01T10:30:00")) == ["fast_cron", "fast_span", "off", "slow_span"]
    assert {n: r.schedule_status for n, r in calls if n != "slow_span"} == {
        "off": {},
        "fast_cron": {},
        "fast_span": {},
    }
    with runners.store.read() as db:
        assert [r[0] for r in db.execute("SELECT function FROM timer_status")] == ["slow_span"]

    calls.clear()
    runner = runners.restart(*fns)
    assert start(runner, "2024-01-01T12:00:00") == ["slow_span"]  # only the monitored one catches up


def test_timespan_timer_runs_every_interval(runners):
    calls: Calls = []
    fn = timer_function("t", "00:10:00", calls)
    runner = runners.restart(fn)
    start(runner, "2024-01-01T10:00:07")
    assert runner.next_due() == utc("2024-01-01T10:10:07")
    assert tick(runner, "2024-01-01T10:10:07") == ["t"]
    assert runner.next_due() == utc("2024-01-01T10:20:07")
    runner = runners.restart(fn)
    assert start(runner, "2024-01-01T11:00:00") == ["t"]  # down over 10:20:07
    assert calls[-1][1].past_due is True
    assert runner.next_due() == utc("2024-01-01T11:10:00")


def test_a_failing_timer_is_logged_and_does_not_stop_the_others(runners, caplog):
    calls: Calls = []
    runner = runners.restart(
        timer_function("flaky", "0 */30 * * * *", calls, fail=True),
        timer_function("good", "0 */30 * * * *", calls),
    )
    start(runner, "2024-01-01T10:15:00")
    with caplog.at_level(logging.ERROR, logger="devhost.timers"):
        assert tick(runner, "2024-01-01T10:30:00") == ["flaky", "good"]
    assert sorted(n for n, _ in calls) == ["flaky", "good"]
    failure = next(r for r in caplog.records if r.name == "devhost.timers")
    assert failure.getMessage() == "timer trigger flaky failed" and failure.exc_info is not None
    assert "flaky failed on purpose" in caplog.text
    # Its schedule goes on (no retry; the next occurrence as usual), also across a restart.
    assert [t.status.next for t in runner.timers] == [utc("2024-01-01T11:00:00")] * 2
    assert tick(runner, "2024-01-01T11:00:00") == ["flaky", "good"]
    runner = runners.restart(
        timer_function("flaky", "0 */30 * * * *", calls, fail=True),
        timer_function("good", "0 */30 * * * *", calls),
    )
    assert start(runner, "2024-01-01T11:10:00") == []


def test_real_app_sweep_timer_is_indexed(tmp_path):
    from triggers import sweep

    app = df.DFApp()
    app.register_functions(sweep.bp)
    index = FunctionIndex.from_app(app)
    with contextlib.closing(Store(tmp_path / "host.sqlite")) as store:
        runner = TimerRunner(store, index, {"ENDPOINT_SWEEP_SCHEDULE": "0 */30 * * * *"}, "{}")
        (timer,) = runner.timers
        assert (timer.param, timer.function.client_param) == ("timer", "client")
        assert (timer.run_on_startup, timer.use_monitor) == (False, True)
        asyncio.run(runner.start(utc("2024-01-01T10:15:00")))
        assert runner.next_due() == utc("2024-01-01T10:30:00")


# -- the loop itself, with an injected clock and sleep ---------------------------------------------


def test_run_loop_with_injected_clock_and_sleep(runners, caplog):
    calls: Calls = []
    clock = Clock(utc("2024-01-01T10:15:00"))
    runner = runners.restart(
        timer_function("flaky", "0 */30 * * * *", calls, fail=True), clock=clock, max_sleep_s=600
    )
    end = utc("2024-01-01T12:00:00")
    slept: list[float] = []
    fired: list[datetime] = []

    async def main() -> None:
        done = asyncio.Event()

        async def sleep(seconds: float) -> None:  # virtual time: advance the clock instead of waiting
            slept.append(seconds)
            clock.now += timedelta(seconds=seconds)
            if clock.now >= end:
                done.set()
                await asyncio.Future()  # park until cancelled

        task = asyncio.create_task(runner.run(on_fired=lambda: fired.append(clock.now), sleep=sleep))
        await done.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="devhost.timers"):
        asyncio.run(main())
    assert fired == [utc("2024-01-01T10:30:00"), utc("2024-01-01T11:00:00"), utc("2024-01-01T11:30:00")]
    assert len(calls) == 3 and caplog.text.count("timer trigger flaky failed") == 3  # failures never stop it
    assert max(slept) <= 600 and min(slept) > 0


# -- the durable client: a timer starts an orchestration in the real engine ------------------------


def _timer_env(**schedules: str) -> dict[str, str]:
    env = {
        "STARTER_SCHEDULE": YEARLY,
        "FLAKY_SCHEDULE": YEARLY,
        "BOOT_SCHEDULE": YEARLY,
        "TASK_HUB_NAME": "t",
    }
    env.update(schedules)
    return env


def test_timer_starts_an_orchestration_through_the_durable_client(tmp_path):
    timer_app.reset()
    clock = Clock(utc("2024-01-01T10:15:00"))
    index = FunctionIndex.from_app(timer_app.app)
    store = Store(tmp_path / "host.sqlite")
    engine = Engine(store, index, clock)
    port = free_port()
    binding = client_binding(f"http://127.0.0.1:{port}", "t")
    runner = TimerRunner(store, index, _timer_env(STARTER_SCHEDULE="0 0 * * * *"), binding, clock=clock)

    async def main() -> tuple[list[str], list[str]]:
        _bind_durable_client_session()
        web_runner = web.AppRunner(build_app(engine, index, binding, lambda: None), access_log=None)
        await web_runner.setup()
        await web.TCPSite(web_runner, "127.0.0.1", port).start()
        try:
            at_start = await runner.start()
            clock.now = utc("2024-01-01T11:00:00")
            return at_start, await runner.tick()
        finally:
            await web_runner.cleanup()
            await _close_durable_client_session()

    try:
        assert asyncio.run(main()) == (["on_boot"], ["starter"])
        (instance,) = timer_app.STARTED
        drain(engine, clock)
        status = engine.status(instance)
        assert status["name"] == "stamped" and status["runtimeStatus"] == "Completed"
        assert status["output"] == {"past_due": False}
    finally:
        store.close()


def test_host_runs_timers_alongside_http(tmp_path):
    """The real host on a thread: a */1 s schedule fires, its orchestration runs; shutdown is clean."""
    timer_app.reset()
    timer_app.FAIL.add("flaky")
    env = _timer_env(STARTER_SCHEDULE="*/1 * * * * *", FLAKY_SCHEDULE="*/1 * * * * *")
    host = Host(tmp_path / "host.sqlite", free_port(), env, module="testing.apps.timer_app")

    def wait(name: str) -> bool:
        return timer_app.EVENTS[name].wait(15)

    with serving(host) as thread:
        assert wait("on_boot")  # runOnStartup
        assert wait("flaky")  # fails every second …
        assert wait("started") and wait("echo")  # … while the starter's orchestration runs its activity
        assert host.timers is not None and host.timers.errors == {}
        starter = next(c for c in timer_app.CALLS if c["function"] == "starter")
        assert starter["past_due"] is False and starter["status"] == {}  # sub-minute: not monitored
    assert not thread.is_alive()
