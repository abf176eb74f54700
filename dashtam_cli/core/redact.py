"""The registry of secrets the process holds, masking every form they travel in, and the log filter.

A secret leaves the process in more shapes than its own text: percent-encoded
in a form body or a query (Schwab's tokens end in ``@``, sent as ``%40``),
base64-encoded in an ``Authorization: Basic`` header, JSON-escaped. A provider
that echoes a request in its error answer hands any of them back. So each
secret is expanded once, when it is registered, into every form listed in
:func:`variants`, and all of them are masked in one regular-expression pass
(a trie of the forms, so the cost hardly grows with their number).

Provider text (error descriptions, error bodies, headers) is untrusted:
:func:`sanitize` is the one function that makes it fit for a message, a log
record or an audit entry.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import traceback
import urllib.parse
from typing import Final

__all__ = [
    "MASK",
    "RedactingFilter",
    "plain",
    "redact",
    "register_secret",
    "sanitize",
    "variants",
]

MASK: Final = "***"
# Shorter values would mask innocent text (a "1" in every number); real
# secrets dashtam handles (tokens, keys, client secrets) are far longer, and
# Schwab's account numbers have 8 digits (see docs/data.md).
_MIN_SECRET_LENGTH: Final = 6
# How much provider text a message or an audit detail keeps, by default.
DEFAULT_LIMIT: Final = 200

_lock = threading.Lock()
_secrets: set[str] = set()
_forms: set[str] = set()
# Every form by its first _MIN_SECRET_LENGTH characters, longest first: a
# position in a text is checked only against the forms that start like it.
_by_anchor: dict[str, tuple[str, ...]] = {}
_longest = 0


def _b64_cores(raw: bytes) -> set[str]:
    """The base64 characters that depend on ``raw`` alone, wherever it sits in a longer value.

    In ``base64("client_id:secret")`` the secret starts 0, 1 or 2 bytes into
    a 3-byte group; for each offset, the characters whose 6 bits all come
    from the secret are the same whatever surrounds it.
    """
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        first = -(-8 * offset // 6)  # ceil: the first character free of the padding bytes
        last = 8 * (offset + len(raw)) // 6  # the characters wholly inside the secret
        core = encoded[first:last]
        cores.add(core)
        cores.add(core.translate(str.maketrans("+/", "-_")))  # the URL-safe alphabet
    return cores


def variants(secret: str) -> set[str]:
    """Every form of ``secret`` that masking looks for.

    Its text; percent-encoded as in a path (``quote``), a query or form body
    (``quote_plus``), twice over, and with lower-case hex digits; JSON-escaped;
    and base64 (standard and URL-safe, padded or not, and its inner
    characters at every alignment, which covers a Basic header of
    ``client_id:secret``).
    """
    forms = {secret}
    for encoded in (
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(urllib.parse.quote(secret, safe=""), safe=""),
    ):
        forms.add(encoded)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), encoded))
    escaped = json.dumps(secret)[1:-1]
    forms.update((escaped, escaped.replace("/", "\\/")))
    raw = secret.encode("utf-8", "surrogatepass")
    for encoder in (base64.b64encode, base64.urlsafe_b64encode):
        full = encoder(raw).decode("ascii")
        forms.update((full, full.rstrip("=")))
    forms.update(_b64_cores(raw))
    return {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}


def register_secret(value: str | bytes | None) -> None:
    """Mask ``value``, in every form it travels in, in every log record and audit entry."""
    if not value:
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if len(text) < _MIN_SECRET_LENGTH:
        return
    global _by_anchor, _longest  # noqa: PLW0603 - one registry per process, by design
    with _lock:
        if text in _secrets:
            return
        new = variants(text) - _forms
        _secrets.add(text)
        if not new:
            return
        _forms.update(new)
        index = dict(_by_anchor)
        for anchor in {form[:_MIN_SECRET_LENGTH] for form in new}:
            same = {f for f in new if f.startswith(anchor)}.union(index.get(anchor, ()))
            index[anchor] = tuple(sorted(same, key=len, reverse=True))
        # Swapped whole: a redact running in another thread sees the old or the new.
        _by_anchor = index
        _longest = max(_longest, *map(len, new))


def forget_secrets() -> None:
    """Empty the registry (tests use this to start clean)."""
    global _by_anchor, _longest  # noqa: PLW0603
    with _lock:
        _secrets.clear()
        _forms.clear()
        _by_anchor = {}
        _longest = 0


def redact(text: str) -> str:
    """Return ``text`` with every form of every registered secret replaced by ``***``.

    Overlapping occurrences are masked as one: nothing of either is left.
    """
    index = _by_anchor
    size = _MIN_SECRET_LENGTH
    if not index or len(text) < size:
        return text
    pieces: list[str] = []
    kept = 0  # text[:kept] is copied or masked
    masked_to = -1  # the end of the mask being extended
    for start in range(len(text) - size + 1):
        forms = index.get(text[start : start + size])
        if forms is None:
            continue
        end = next((start + len(f) for f in forms if text.startswith(f, start)), -1)
        if end < 0:
            continue
        if start <= masked_to:
            masked_to = max(masked_to, end)
            continue
        if masked_to >= 0:
            pieces.append(MASK)
            kept = masked_to
        pieces.append(text[kept:start])
        masked_to = end
    if masked_to < 0:
        return text
    pieces.extend((MASK, text[masked_to:]))
    return "".join(pieces)


# ANSI/VT escape sequences (CSI, OSC, single-character) and their 8-bit forms.
_ESCAPES: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x9c)?"
)
# Account identifiers a provider may echo before dashtam knows them: a run of
# 6 or more digits (Schwab's account numbers have 8) or of 32 or more letters
# and digits (Schwab's hashValue has 64), standing alone (not part of a longer
# word, a UUID or a date).
_IDENTIFIERS: Final = re.compile(r"(?<![\w-])(?:[0-9]{6,}|[0-9A-Za-z]{32,})(?![\w-])")
_ELLIPSIS: Final = "…"


def _printable(text: str) -> str:
    """Escape sequences and control or format characters removed; whitespace runs made one space."""
    text = _ESCAPES.sub("", text)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " if ch.isspace() else "" for ch in text)
    return " ".join(text.split())


def plain(text: str, *, limit: int) -> str:
    """Untrusted text kept as data (a name, a description): one line, printable, at most ``limit``.

    Escape sequences and control characters are removed and whitespace runs
    made one space, as :func:`sanitize` does, but nothing is masked: digits in
    a description are the description's. Only a bounded prefix is looked at.
    """
    flat = _printable(text[: 4 * limit + 64])
    if len(flat) > limit:
        return flat[: max(0, limit - 1)].rstrip() + _ELLIPSIS
    return flat


def sanitize(text: str | bytes | None, *, limit: int = DEFAULT_LIMIT) -> str:
    """Make untrusted text (a provider's error, a header) fit for a message, a log or an audit.

    One line: ANSI escape sequences and control characters removed, runs of
    whitespace made one space; every form of every registered secret masked,
    and anything shaped like an account identifier too; at most ``limit``
    characters (an ellipsis marks a cut). Only a bounded prefix of a long
    text is looked at, and nothing of a secret cut there survives.
    """
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    window = 4 * limit + 2 * _longest + 64
    cut = len(text) > window
    if cut:
        text = text[:window]
    flat = _IDENTIFIERS.sub(MASK, redact(_printable(text)))
    if cut:
        # A secret straddling the window's end is only partly there: drop that end.
        flat = flat[: max(0, len(flat) - _longest)].rstrip()
    if cut or len(flat) > limit:
        return flat[: max(0, limit - 1)].rstrip() + _ELLIPSIS
    return flat


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
