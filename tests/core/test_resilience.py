"""The resilience layer on its own: the sliding-window limiter, Retry-After, backoff, gather_all."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import math
import os
import time
from typing import TYPE_CHECKING, Final

import pytest

from dashtam_cli.core.resilience import (
    MAX_BELIEVABLE_RETRY_AFTER,
    RETRY_STATUSES,
    Backoff,
    SlidingWindowLimiter,
    gather_all,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW: Final = dt.datetime(2026, 3, 2, 12, 0, 0, tzinfo=dt.UTC)


class StoppedClock:
    """A monotonic clock that moves only when told to, or when the limiter sleeps on it."""

    def __init__(self) -> None:
        """Start at zero with no recorded sleeps."""
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        """The current time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the pause and move the clock by it, without waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


def acquire_at(limiter: SlidingWindowLimiter, clock: StoppedClock, times: list[float]) -> None:
    """Acquire once at each of ``times`` (moving the clock there first)."""

    async def run() -> None:
        for moment in times:
            clock.now = max(clock.now, moment)
            await limiter.acquire()

    asyncio.run(run())


def http_date(moment: dt.datetime) -> str:
    """``moment`` as an HTTP date (RFC 9110 IMF-fixdate)."""
    return email.utils.format_datetime(moment, usegmt=True)


# --- the limiter ------------------------------------------------------------------------------------


def test_a_burst_up_to_the_limit_passes_without_waiting() -> None:
    """``limit`` acquisitions at the same instant never sleep."""
    clock = StoppedClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    acquire_at(limiter, clock, [0.0, 0.0, 0.0])
    assert clock.sleeps == []


def test_the_next_request_waits_until_the_oldest_leaves_the_window() -> None:
    """With requests at 0, 2 and 4 and a 10 s window, a fourth at 5 waits exactly 5 s (until 10)."""
    clock = StoppedClock()
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock, sleep=clock.sleep)
    acquire_at(limiter, clock, [0.0, 2.0, 4.0, 5.0])
    assert clock.sleeps == [5.0]
    assert clock.now == 10.0


def test_a_request_exactly_one_window_later_does_not_wait() -> None:
    """The window is half-open: a request ``window`` seconds after the oldest may go at once."""
    clock = StoppedClock()
    limiter = SlidingWindowLimiter(2, 10.0, clock=clock, sleep=clock.sleep)
    acquire_at(limiter, clock, [0.0, 1.0, 10.0])
    assert clock.sleeps == []


def test_no_window_ever_holds_more_than_the_limit() -> None:
    """Twenty requests at once through a limit of 4 per 10 s: every 10 s span holds at most 4."""
    clock = StoppedClock()
    limiter = SlidingWindowLimiter(4, 10.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def run() -> None:
        for _ in range(20):
            await limiter.acquire()
            sent.append(clock.now)

    asyncio.run(run())
    assert len(sent) == 20
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + 10.0) <= 4
    # And it is not slower than it must be: 20 requests at 4 per window take 4 windows.
    assert sent[-1] == 40.0


def test_concurrent_acquirers_are_serialised_by_the_lock() -> None:
    """Tasks acquiring together still respect the limit: the third of a limit of 2 waits."""
    clock = StoppedClock()
    limiter = SlidingWindowLimiter(2, 5.0, clock=clock, sleep=clock.sleep)

    async def run() -> list[float]:
        async def one() -> float:
            await limiter.acquire()
            return clock.now

        return list(await asyncio.gather(one(), one(), one()))

    assert sorted(asyncio.run(run())) == [0.0, 0.0, 5.0]
    assert clock.sleeps == [5.0]


# --- Retry-After ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        pytest.param(dt.timedelta(seconds=90), 90.0, id="90s-ahead"),
        pytest.param(dt.timedelta(hours=23), 23 * 3600.0, id="23h-ahead"),
        pytest.param(dt.timedelta(days=1), MAX_BELIEVABLE_RETRY_AFTER, id="exactly-a-day"),
        pytest.param(dt.timedelta(0), 0.0, id="now"),
        pytest.param(-dt.timedelta(minutes=5), 0.0, id="in-the-past"),
    ],
)
def test_an_http_date_is_the_seconds_until_it(offset: dt.timedelta, expected: float) -> None:
    """An HTTP date gives the time left until it, never negative, up to a day."""
    value = http_date(NOW + offset)
    assert retry_after_seconds(value, now=NOW.timestamp()) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(http_date(NOW + dt.timedelta(days=1, seconds=1)), id="a-day-and-a-second"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", id="year-9999"),
    ],
)
def test_an_http_date_beyond_a_day_is_ignored(value: str) -> None:
    """A date further than a day ahead is noise: None, so the caller's own back-off applies."""
    assert retry_after_seconds(value, now=NOW.timestamp()) is None


@pytest.fixture
def new_york() -> Iterator[None]:
    """Local time five hours behind UTC, restored after the test."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_a_date_without_a_zone_is_read_as_utc_not_local_time() -> None:
    """A date with ``-0000`` (no zone given) counts as UTC, whatever the machine's time zone."""
    value = "Mon, 02 Mar 2026 12:01:00 -0000"
    assert retry_after_seconds(value, now=NOW.timestamp()) == pytest.approx(60.0)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("-5", id="negative"),
        pytest.param("1.5", id="fraction"),
        pytest.param("1e3", id="exponent"),
        pytest.param("\u00b2", id="superscript-two"),
        pytest.param("\u0663", id="arabic-indic-three"),
        pytest.param("soon", id="word"),
        pytest.param("Mon, 99 Foo 2026 25:61:61 GMT", id="broken-date"),
        pytest.param("9" * 5000, id="5000-digits"),
        pytest.param("86401", id="a-day-and-a-second"),
    ],
)
def test_junk_is_none(value: str | None) -> None:
    """Anything but ASCII digits up to a day, or a real HTTP date, is None (never an error)."""
    assert retry_after_seconds(value, now=NOW.timestamp()) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("000", 0.0, id="zeros"),
        pytest.param("\t7 ", 7.0, id="padded"),
        pytest.param("0000000000000000086400", 86400.0, id="leading-zeros-to-the-cap"),
    ],
)
def test_seconds_up_to_the_cap_are_kept(value: str, expected: float) -> None:
    """Whole seconds, padded or with leading zeros, are read exactly up to a day."""
    assert retry_after_seconds(value) == expected


def test_retry_statuses_are_the_transient_ones() -> None:
    """Rate limits and gateway failures are retried; client errors and plain 500s are not."""
    assert {429, 502, 503, 504} == RETRY_STATUSES
    assert not {400, 401, 403, 404, 500} & RETRY_STATUSES


# --- backoff ----------------------------------------------------------------------------------------


def test_delay_is_the_doubling_ceiling_times_the_draw() -> None:
    """Full jitter: the pause is ``min(cap, base * 2**(n-1))`` scaled by the random draw."""
    backoff = Backoff(base=1.0, cap=5.0, rng=lambda: 0.5)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 2.5, 2.5]


def test_a_draw_of_zero_pauses_not_at_all() -> None:
    """Without a Retry-After the jitter may go down to no pause at all."""
    assert Backoff(rng=lambda: 0.0).delay(3) == 0.0


def test_retry_after_above_the_cap_is_still_honoured() -> None:
    """A server asking for 100 s gets 100 s even with a 30 s cap: never retry sooner than asked."""
    backoff = Backoff(cap=30.0, rng=lambda: 1.0)
    assert backoff.delay(1, retry_after=100.0) == 100.0


def test_retry_after_below_the_jitter_keeps_the_jitter() -> None:
    """A Retry-After shorter than the drawn pause does not shorten it."""
    backoff = Backoff(base=8.0, cap=30.0, rng=lambda: 1.0)
    assert backoff.delay(2, retry_after=3.0) == 16.0


def test_retry_after_raises_a_small_draw_to_it() -> None:
    """A draw below the Retry-After is raised to it."""
    backoff = Backoff(base=8.0, cap=30.0, rng=lambda: 0.1)
    assert backoff.delay(1, retry_after=4.0) == 4.0


@pytest.mark.parametrize("retry_after", [math.nan, math.inf, -1.0])
def test_an_unusable_retry_after_leaves_the_jitter(retry_after: float) -> None:
    """NaN, infinity and negative pauses are ignored rather than slept or compared."""
    backoff = Backoff(base=1.0, cap=30.0, rng=lambda: 0.25)
    assert backoff.delay(3, retry_after=retry_after) == 1.0


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    """The ceiling never passes the cap, however many attempts (no overflow to infinity)."""
    assert Backoff(cap=30.0, rng=lambda: 1.0).delay(1000) == 30.0


# --- gather_all -------------------------------------------------------------------------------------


def test_gather_all_returns_results_in_argument_order() -> None:
    """Results come back in the order the awaitables were given, whatever order they finish in."""

    async def value(n: int, yields: int) -> int:
        for _ in range(yields):
            await asyncio.sleep(0)
        return n

    assert asyncio.run(gather_all(value(1, 3), value(2, 0), value(3, 1))) == [1, 2, 3]


def test_gather_all_waits_for_every_task_before_raising() -> None:
    """A failure is raised only after the others finish: none outlives the caller's resources."""
    finished: list[str] = []

    async def fail() -> int:
        raise ValueError("first")

    async def slow() -> int:
        for _ in range(5):
            await asyncio.sleep(0)
        finished.append("slow")
        return 1

    async def run() -> None:
        await gather_all(fail(), slow())

    with pytest.raises(ValueError, match="first"):
        asyncio.run(run())
    assert finished == ["slow"]


def test_gather_all_raises_the_first_failure_in_argument_order() -> None:
    """With two failures, the one given first is raised, even if the other failed earlier."""

    async def late_failure() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        raise KeyError("late")

    async def early_failure() -> int:
        raise LookupError("early")

    with pytest.raises(KeyError, match="late"):
        asyncio.run(gather_all(late_failure(), early_failure()))
