"""Registered secrets never reach a log handler: not in messages, arguments or tracebacks."""

from __future__ import annotations

import io
import logging

from dashtam_cli.core.redact import MASK, RedactingFilter, redact, register_secret

SECRET = "tok-3f9a8b7c6d5e"


def capture() -> tuple[logging.Logger, io.StringIO]:
    """A logger whose handler has the filter, writing to a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-redact-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_message_arguments_and_exception_are_masked() -> None:
    """The secret is masked in the message, its %-arguments and the exception text."""
    register_secret(SECRET)
    logger, stream = capture()
    logger.info("token %s in message", SECRET)
    logger.info(f"inline {SECRET}")  # noqa: G004 - the point of the test
    try:
        raise RuntimeError(f"failed with {SECRET}")  # noqa: TRY301 - logged right here
    except RuntimeError:
        logger.exception("refresh failed")
    logger.info("stack", stack_info=True)
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(MASK) >= 3
    assert "RuntimeError: failed with ***" in text


def test_longest_secret_masked_whole_and_short_values_ignored() -> None:
    """A secret containing another is masked whole; values too short to be secrets are left alone."""
    register_secret("abcdefgh")
    register_secret("abcdefgh-longer-token")
    register_secret("123")
    assert redact("x abcdefgh-longer-token y abcdefgh 123") == "x *** y *** 123"


def test_unregistered_text_is_untouched() -> None:
    """Nothing is masked that was not registered."""
    assert redact("plain text") == "plain text"
