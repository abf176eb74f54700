"""What a command over several connections got: its items, what failed, and the exit it means."""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

from dashtam_cli.core.errors import DashtamError, PartialFailure, ReauthRequired

__all__ = ["Failure", "FetchResult"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A connection, or one account of it (``account``: its masked number), that failed, and why."""

    connection: str
    error: DashtamError
    account: str | None = None

    @property
    def label(self) -> str:
        """``beta``, or ``alpha ****2222`` for one account of alpha."""
        return self.connection if self.account is None else f"{self.connection} {self.account}"

    def described(self) -> DashtamError:
        """The error, naming the account it is about, with its class and exit code."""
        if self.account is None:
            return self.error
        # Made without __init__ (whose arguments differ by class), with every attribute kept.
        kind = type(self.error)
        error = kind.__new__(kind)
        error.__dict__.update(self.error.__dict__)
        error.message = f"{self.account}: {self.error.message}"
        error.args = (error.message,)
        return error


@dataclasses.dataclass(frozen=True, slots=True)
class FetchResult(Generic[T]):
    """The items fetched, what failed, and how many requests it took.

    ``failures`` are connections (or single accounts of one) that failed;
    ``succeeded`` counts the connections that answered, whole or in part.
    ``ignored`` are failures of connections the command turned out not to
    need (the account asked for was found in another): they do not change
    the outcome.
    """

    items: list[T]
    failures: list[Failure]
    succeeded: int
    requests: int = 0
    ignored: list[Failure] = dataclasses.field(default_factory=list)
    connections: int = 0

    def summary(self) -> str:
        """``1 of 2 connections failed (beta)``, ``1 account failed (alpha ****2222)``, or both."""
        whole = [f for f in self.failures if f.account is None]
        single = [f for f in self.failures if f.account is not None]
        total = self.connections or self.succeeded + len(whole)
        parts = []
        if whole:
            names = ", ".join(f.label for f in whole)
            parts.append(f"{len(whole)} of {total} connections failed ({names})")
        if single:
            names = ", ".join(f.label for f in single)
            plural = "s" if len(single) > 1 else ""
            parts.append(f"{len(single)} account{plural} failed ({names})")
        return "; ".join(parts)

    def outcome(self, *, detail: bool = True) -> DashtamError | None:
        """The error to exit with: none, a new login (4) when that is all that failed, partial (3).

        When nothing succeeded, the failure itself (or one error naming them all).
        ``detail`` puts each failure's message in a partial outcome's message;
        the CLI, which prints each on its own line first, leaves them out.
        """
        if not self.failures:
            return None
        lines = "; ".join(f"{f.label}: {f.error.message}" for f in self.failures)
        relogin = all(isinstance(f.error, ReauthRequired) for f in self.failures)
        if self.succeeded:
            summary = f"{self.summary()} ({lines})" if detail else self.summary()
            if relogin:
                hint = (
                    self.failures[0].error.hint
                    if len(self.failures) == 1
                    else "log in again: the command for each is on its line above"
                )
                # Logins are a connection's: every failure here is a whole connection.
                names = ", ".join(f.label for f in self.failures)
                total = self.connections or self.succeeded + len(self.failures)
                verb = "needs" if len(self.failures) == 1 else "need"
                return ReauthRequired(
                    f"{len(self.failures)} of {total} connections {verb} a new login ({names});"
                    " the rest was printed",
                    hint=hint,
                )
            return PartialFailure(
                summary, hint="the rest was printed; each failure is on its line above"
            )
        if len(self.failures) == 1:
            return self.failures[0].described()
        if relogin:
            return ReauthRequired(
                lines, hint="log in again: the command for each is on its line above"
            )
        return DashtamError(lines, hint="see the messages above; retry later")
