"""The registry of secrets the process holds, and the logging filter that masks them."""

from __future__ import annotations

import logging
import threading
import traceback

__all__ = ["MASK", "RedactingFilter", "redact", "register_secret"]

MASK = "***"
# Shorter values would mask innocent text (a "1" in every number); real
# secrets dashtam handles (tokens, keys, client secrets) are far longer.
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()


def register_secret(value: str | bytes | None) -> None:
    """Mask ``value`` in every log record and audit entry from now on."""
    if not value:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) < _MIN_SECRET_LENGTH:
        return
    global _ordered  # noqa: PLW0603 - one registry per process, by design
    with _lock:
        if text in _secrets:
            return
        _secrets.add(text)
        # Longest first, so a secret that contains another is masked whole.
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def forget_secrets() -> None:
    """Empty the registry (tests use this to start clean)."""
    global _ordered  # noqa: PLW0603
    with _lock:
        _secrets.clear()
        _ordered = ()


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message, arguments and exception text.

    Attach it to handlers, not loggers: handler filters see records that
    propagate from every logger, including third-party ones. The exception
    is rendered to text here and ``exc_info`` cleared, so no handler can
    render the raw traceback (with its secret-bearing locals or messages)
    behind the filter's back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a wrong log call must not crash the program
            # Without this filter logging reports such a call and carries on;
            # a filter runs outside that guard, so it must do the same itself.
            message = f"{record.msg!s} (log arguments that do not fit: {record.args!r})"
        message = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            message = f"{message}\n{redact(exc_text)}"
        elif record.exc_text:
            message = f"{message}\n{redact(record.exc_text)}"
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.msg = message
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True
