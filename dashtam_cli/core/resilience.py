"""Resilience for provider APIs: a sliding-window limiter, jittered backoff, orphan-free gather."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import email.utils
import math
import random
import time
from typing import TYPE_CHECKING, Final, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "MAX_BELIEVABLE_RETRY_AFTER",
    "RETRY_STATUSES",
    "Backoff",
    "SlidingWindowLimiter",
    "gather_all",
    "retry_after_seconds",
]

T = TypeVar("T")

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# A Retry-After beyond a day is not an answer but noise (1e20, 5,000 digits, a
# year-9999 date): it is ignored and the default back-off applies.
MAX_BELIEVABLE_RETRY_AFTER: Final = 86400.0


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``window`` seconds; bursts up to the limit pass.

    Exact, not a token bucket: it remembers the times of the last ``limit``
    requests, so no 60-second window ever holds more than ``limit``.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Allow ``limit`` requests per ``window`` seconds."""
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._times: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a request may go, and count it."""
        async with self._lock:
            while True:
                now = self._clock()
                while self._times and now - self._times[0] >= self.window:
                    self._times.popleft()
                if len(self._times) < self.limit:
                    self._times.append(now)
                    return
                await self._sleep(self._times[0] + self.window - now)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse ``Retry-After``: seconds or an HTTP date; None when absent, unreadable or absurd.

    Only ASCII digits count as seconds (``str.isdigit`` also accepts ``²`` and
    the digits of other scripts, which ``float`` then refuses or misreads);
    negative values, fractions, and anything beyond a day are ignored, so the
    caller falls back to its own back-off.
    """
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        seconds = float(digits) if len(digits) <= len("86400") else math.inf
        return seconds if seconds <= MAX_BELIEVABLE_RETRY_AFTER else None
    try:
        moment = email.utils.parsedate_to_datetime(text)
        if moment.tzinfo is None:  # "-0000": UTC with no zone named, not local time
            moment = moment.replace(tzinfo=dt.UTC)
        stamp = moment.timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    current = time.time() if now is None else now
    seconds = max(0.0, stamp - current)
    return seconds if seconds <= MAX_BELIEVABLE_RETRY_AFTER else None


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and delay."""

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    rng: Callable[[], float] = random.random

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The pause before retry number ``attempt`` (1-based); never shorter than Retry-After."""
        ceiling = min(self.cap, self.base * 2.0 ** (attempt - 1))
        jittered: float = ceiling * self.rng()
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            return min(max(jittered, retry_after), max(self.cap, retry_after))
        return jittered


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """Run ``aws`` concurrently; wait for every one, then raise the first error, if any.

    ``asyncio.gather`` raises at the first failure and leaves the others
    running: they would outlive the HTTP client and the vault they use.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast("list[T]", results)
