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


class Spy(logging.Handler):
    """A handler that keeps everything it was handed and everything it formatted."""

    def __init__(self) -> None:
        """Start with nothing seen."""
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's every attribute as the handler receives it, and its formatted text."""
        self.seen.append(repr(vars(record)))
        self.seen.append(self.format(record))


def spy_logger() -> tuple[logging.Logger, Spy]:
    """A logger whose only handler is a Spy with the filter attached."""
    spy = Spy()
    spy.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test-redact-spy-{id(spy)}")
    logger.handlers[:] = [spy]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, spy


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
    text = stream.getvalue()
    assert SECRET not in text
    assert "token *** in message" in text
    assert "inline ***" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: failed with ***" in text


def test_chained_exceptions_and_notes_are_masked() -> None:
    """The cause of an exception and its notes are part of the text, and masked too."""
    register_secret(SECRET)
    logger, stream = capture()
    try:
        try:
            raise ValueError(f"inner {SECRET}")  # noqa: TRY301 - logged right here
        except ValueError as inner:
            outer = KeyError("outer")
            outer.add_note(f"note {SECRET}")
            raise outer from inner
    except KeyError:
        logger.exception("failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert "ValueError: inner ***" in text
    assert "note ***" in text


def test_stack_info_is_masked() -> None:
    """A stack carrying the secret (in a source line) is masked before any handler sees it."""
    register_secret(SECRET)
    logger, stream = capture()
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "with a stack",
        (),
        None,
        sinfo=f'Stack (most recent call last):\n  File "x.py", line 1\n    login("{SECRET}")',
    )
    logger.handle(record)
    text = stream.getvalue()
    assert "with a stack" in text
    assert 'login("***")' in text
    assert SECRET not in text


def test_real_stack_info_is_kept() -> None:
    """stack_info=True still shows the stack: the filter masks it, it does not drop it."""
    logger, stream = capture()
    logger.info("where", stack_info=True)
    text = stream.getvalue()
    assert "Stack (most recent call last)" in text
    assert "test_real_stack_info_is_kept" in text


def test_exception_text_already_rendered_is_masked() -> None:
    """A record whose exception was rendered earlier (exc_text set, no exc_info) is masked too."""
    register_secret(SECRET)
    logger, stream = capture()
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "relayed", (), None)
    record.exc_text = f"Traceback (most recent call last):\nRuntimeError: {SECRET}"
    logger.handle(record)
    text = stream.getvalue()
    assert "RuntimeError: ***" in text
    assert SECRET not in text


def test_a_handler_never_sees_the_secret() -> None:
    """Every attribute of the record a handler receives, and what it formats, is masked."""
    register_secret(SECRET)
    logger, spy = spy_logger()
    logger.warning("token %s", SECRET)
    try:
        raise RuntimeError(f"failed with {SECRET}")  # noqa: TRY301 - logged right here
    except RuntimeError:
        logger.exception("refresh failed for %s", SECRET)
    assert len(spy.seen) == 4
    assert all(SECRET not in seen for seen in spy.seen)
    # The traceback survives as masked text; the raw exception is gone from the record.
    assert "RuntimeError: failed with ***" in spy.seen[3]
    assert "'exc_info': None" in spy.seen[2]


def test_longest_secret_masked_whole_and_short_values_ignored() -> None:
    """A secret containing another is masked whole; values too short to be secrets are left alone."""
    register_secret("abcdefgh")
    register_secret("abcdefgh-longer-token")
    register_secret("123")
    register_secret("abcde")
    assert redact("x abcdefgh-longer-token y abcdefgh 123 abcde") == "x *** y *** 123 abcde"


def test_bytes_are_registered_and_empty_values_ignored() -> None:
    """A secret read as bytes is masked as text; None and empty values register nothing."""
    register_secret(SECRET.encode())
    register_secret(None)
    register_secret("")
    register_secret(b"")
    assert redact(f"a {SECRET} b") == f"a {MASK} b"
    assert redact("a  b") == "a  b"


def test_a_wrong_log_call_does_not_crash_and_is_still_masked() -> None:
    """A log call whose arguments do not fit its message is reported, masked, not raised."""
    register_secret(SECRET)
    logger, stream = capture()
    logger.warning("%s and %s", SECRET)  # noqa: PLE1206 - the wrong call is the point
    text = stream.getvalue()
    assert "%s and %s" in text
    assert MASK in text
    assert SECRET not in text


def test_unregistered_text_is_untouched() -> None:
    """Nothing is masked that was not registered."""
    assert redact("plain text") == "plain text"
