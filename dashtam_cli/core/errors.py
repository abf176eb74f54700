"""The one exception tree of dashtam's core, each error with a message, a hint and an exit code."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

__all__ = [
    "ConfigError",
    "DashtamError",
    "ExitCode",
    "InputError",
    "PartialFailure",
    "ProviderError",
    "ReauthRequired",
    "RequestBudgetSpent",
]


class ExitCode(enum.IntEnum):
    """Process exit codes: a documented interface that scripts depend on."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    REAUTH = 4
    INTERRUPTED = 130


class DashtamError(Exception):
    """Base of every error the core raises on purpose.

    ``message`` is one line saying what went wrong; ``hint`` says what to do
    about it. Neither ever contains a secret: raise sites name the record or
    the setting, never its value.
    """

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        """Store the one-line message and the optional hint."""
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        """Return the message alone, so logging never shows more than the user sees."""
        return self.message


class InputError(DashtamError):
    """An argument or option value the command cannot use."""

    exit_code = ExitCode.USAGE


class ConfigError(DashtamError):
    """The configuration file or an environment variable holds an unusable value."""


class ProviderError(DashtamError):
    """A provider answered with an error; the audit log keeps its HTTP status and correlation id."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Keep the HTTP status and the provider's correlation id."""
        super().__init__(message, hint=hint)
        self.http_status = http_status
        self.correlation_id = correlation_id


class PartialFailure(DashtamError):
    """Some connections or accounts succeeded and some failed."""

    exit_code = ExitCode.PARTIAL


class ReauthRequired(DashtamError):
    """The provider no longer accepts our tokens: the user must log in again."""

    exit_code = ExitCode.REAUTH


class RequestBudgetSpent(DashtamError):
    """A provider's daily request budget is spent: nothing more is sent until it resets."""

    def __init__(
        self, message: str, *, hint: str | None = None, limit: int, resets_at: dt.datetime
    ) -> None:
        """Keep the limit and when the budget resets (midnight UTC)."""
        super().__init__(message, hint=hint)
        self.limit = limit
        self.resets_at = resets_at
