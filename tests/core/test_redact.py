"""Registered secrets never reach a log handler: not in messages, arguments or tracebacks."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import urllib.parse

from dashtam_cli.core.redact import (
    MASK,
    RedactingFilter,
    forget_secrets,
    redact,
    register_secret,
    sanitize,
)

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


SCHWAB_LIKE = 'R0.AbC/dEf+GhI jKl-MnO~pQr=sT"@'


def encoded_forms(secret: str) -> dict[str, str]:
    """The forms a secret is sent in, each computed here independently of the code under test."""
    raw = secret.encode()
    return {
        "quote": urllib.parse.quote(secret, safe=""),
        "quote path": urllib.parse.quote(secret),
        "quote_plus": urllib.parse.quote_plus(secret),
        "form body": urllib.parse.urlencode({"refresh_token": secret}).split("=", 1)[1],
        "lower-case hex": re.sub(
            "%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(secret, safe="")
        ),
        "double": urllib.parse.quote(urllib.parse.quote(secret, safe=""), safe=""),
        "json": json.dumps(secret)[1:-1],
        "base64": base64.b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(raw).decode(),
    }


def test_every_encoded_form_of_a_secret_is_masked() -> None:
    """Percent-encoded (path, query, form), JSON-escaped and base64 forms are all masked."""
    register_secret(SCHWAB_LIKE)
    forms = encoded_forms(SCHWAB_LIKE)
    assert len(set(forms.values())) == 8
    for name, form in forms.items():
        masked = redact(f"error_description: refresh_token={form}&grant_type=x")
        assert form not in masked, name
        assert "refresh_token=***&grant_type=x" in masked, (name, masked)


def test_a_basic_header_of_client_id_and_secret_is_masked() -> None:
    """Basic base64(client_id:client_secret) is masked without registering the pair itself.

    The secret sits 0, 1 or 2 bytes into a base64 group depending on the
    client id's length; each alignment is covered, and neither the id's nor
    the secret's base64 characters survive beyond the seam between them.
    """
    secret = "app-secret-0123"
    for client_id in ("client-id-1", "client-id-12", "client-id-123"):
        forget_secrets()
        register_secret(client_id)
        register_secret(secret)
        header = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        masked = redact(f"echo: Authorization: Basic {header}")
        assert masked.startswith("echo: Authorization: Basic ***")
        # At most the few characters straddling "id:" and the padding are left.
        leftover = masked.removeprefix("echo: Authorization: Basic ").replace(MASK, "")
        assert len(leftover.rstrip("=")) <= 4, (client_id, masked)
        assert redact(base64.b64encode(secret.encode()).decode()) == MASK


def test_overlapping_secrets_are_masked_as_one() -> None:
    """Two secrets that overlap in a text leave nothing of either."""
    register_secret("abcdef12")
    register_secret("ef123456")
    assert redact("x abcdef123456 y") == "x *** y"


def test_sanitize_bounds_strips_controls_and_masks() -> None:
    """Provider text loses escapes and controls, is masked, shortened, and kept to one line."""
    register_secret(SCHWAB_LIKE)
    quoted = urllib.parse.quote(SCHWAB_LIKE, safe="")
    hostile = f"\x1b[31mbad\x1b[0m\r\nrequest\x00 refresh_token={quoted}\u202e\x07 account 12345678"
    assert sanitize(hostile) == "bad request refresh_token=*** account ***"
    long = sanitize("word " * 1000, limit=50)
    assert len(long) == 50
    assert long.endswith("…")


def test_sanitize_never_leaves_part_of_a_secret_at_a_cut() -> None:
    """A secret straddling the end of the looked-at window is dropped, not shown in part."""
    register_secret(SCHWAB_LIKE)
    for pad in range(0, 1200, 37):
        text = "x" * pad + SCHWAB_LIKE + "y" * 5000
        clean = sanitize(text, limit=100)
        assert not any(SCHWAB_LIKE[:n] in clean for n in range(8, len(SCHWAB_LIKE))), pad


def test_sanitize_masks_unregistered_account_shapes_but_not_uuids() -> None:
    """Numbers of 6+ digits and 32+ letter/digit runs are masked; UUIDs and dates are kept."""
    hash_value = "1996EA061B4878E8D0B9063DF74925E5688F475BE00AF6A0A41E1FC4A2510XA0"
    uuid = "550e8400-e29b-41d4-a716-446655440000"
    text = f"no account 11111111 or /accounts/{hash_value}/x at 2025-01-17 id {uuid}"
    assert sanitize(text) == f"no account *** or /accounts/***/x at 2025-01-17 id {uuid}"
