"""The one way the core makes HTTP clients and reads their answers: TLS verified, sizes bounded."""

from __future__ import annotations

import json
import os
import re
import ssl
import zlib
from typing import TYPE_CHECKING, Any, Final

import httpx

from dashtam_cli.core.errors import ConfigError, ProviderError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dashtam_cli.core.settings import Settings

__all__ = [
    "ACCOUNTS_BODY_LIMIT",
    "ACCOUNT_NUMBERS_BODY_LIMIT",
    "DEFAULT_TIMEOUT",
    "ERROR_BODY_LIMIT",
    "MAX_JSON_DEPTH",
    "TOKEN_BODY_LIMIT",
    "TRANSACTIONS_BODY_LIMIT",
    "BadBody",
    "BodyTooLarge",
    "CertificateNotVerified",
    "certificate_failure",
    "load_json",
    "make_client",
    "read_body",
    "size_text",
    "tls_context",
]

DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=10.0)

# The most of an answer dashtam reads, per endpoint, counted after decompression.
# Real answers are far smaller: a token answer is under 2 KiB; a year of
# transactions (at most 3000 items) about 6 MiB; an account with positions
# well under a MiB each. A larger answer is refused, never held whole.
KiB: Final = 1024
MiB: Final = 1024 * KiB
TOKEN_BODY_LIMIT: Final = 64 * KiB
ACCOUNT_NUMBERS_BODY_LIMIT: Final = 1 * MiB
ACCOUNTS_BODY_LIMIT: Final = 64 * MiB
TRANSACTIONS_BODY_LIMIT: Final = 64 * MiB
# Of an error answer only the start is read: enough for its message.
ERROR_BODY_LIMIT: Final = 64 * KiB
# Provider JSON is a few levels deep; far deeper is refused before parsing.
MAX_JSON_DEPTH: Final = 64
# Sent explicitly: read_body decodes these two itself, bounded (see there).
ACCEPT_ENCODING: Final = "gzip, deflate"


def tls_context(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | bool:
    """The certificate authorities to trust: the ``ca_bundle`` setting, else ``SSL_CERT_FILE``.

    With neither, httpx's default (the certifi bundle) applies. Verification
    itself is never turned off: a custom CA is how a gateway or a local
    sandbox is trusted.
    """
    env = os.environ if environ is None else environ
    bundle = settings.ca_bundle or env.get("SSL_CERT_FILE", "").strip() or None
    if bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        origin = "the ca_bundle setting" if settings.ca_bundle else "SSL_CERT_FILE"
        raise ConfigError(
            f"cannot load the CA bundle {bundle} from {origin}: {exc}",
            hint="point it at a readable PEM file of CA certificates",
        ) from None


def make_client(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """Return an HTTP client; tests pass a transport (respx or a MockTransport)."""
    from dashtam_cli import __version__

    return httpx.AsyncClient(
        verify=tls_context(settings),
        timeout=timeout,
        transport=transport,
        headers={"User-Agent": f"dashtam/{__version__}", "Accept-Encoding": ACCEPT_ENCODING},
        follow_redirects=False,
        trust_env=True,  # proxies (HTTPS_PROXY, NO_PROXY) as users expect
    )


class CertificateNotVerified(ProviderError):
    """A server's TLS certificate did not verify: no retry changes that."""


# Where dashtam takes the certificate authorities it trusts from (see tls_context).
CA_SETTINGS_HINT: Final = (
    "if you use a gateway, a proxy that inspects TLS or a local sandbox, trust its CA with "
    "the ca_bundle setting (DASHTAM_CA_BUNDLE) or SSL_CERT_FILE, and check the one set "
    "points at the right PEM file; otherwise check the system clock"
)


def certificate_failure(exc: BaseException, url: httpx.URL | str) -> CertificateNotVerified | None:
    """The one error for a certificate that did not verify, or None for any other failure.

    httpx wraps the ``ssl.SSLCertVerificationError`` (in httpcore's error):
    the chain of causes is searched, then the text, for a transport that
    reports it only in words.
    """
    seen: BaseException | None = exc
    reason = None
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = seen.verify_message or None
            break
        seen = seen.__cause__ or seen.__context__
    else:
        seen = None
    if seen is None and "CERTIFICATE_VERIFY_FAILED" not in str(exc):
        return None
    why = f" ({reason})" if reason else ""
    return CertificateNotVerified(
        f"the TLS certificate of {httpx.URL(url).host} could not be verified{why}",
        hint=CA_SETTINGS_HINT,
    )


class BodyTooLarge(ProviderError):
    """An answer was larger than its endpoint's limit; reading stopped there."""


class BadBody(ProviderError):
    """An answer could not be read as what it should be (encoding, JSON, nesting)."""


def size_text(size: int) -> str:
    """``64 KiB``, ``64 MiB``: a limit as a person reads it."""
    if size >= MiB and size % MiB == 0:
        return f"{size // MiB} MiB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} bytes"


class _Inflater:
    """Decompresses gzip or deflate without ever producing more than it is allowed.

    httpx's own decoders expand a whole received chunk at once, and a chunk
    of a compressed body can expand a thousandfold: here each call is given
    the room left and zlib stops there.
    """

    def __init__(self, encoding: str) -> None:
        # 32 + MAX_WBITS: a gzip or a zlib header, detected; raw deflate is tried if neither.
        self._raw_fallback = encoding == "deflate"
        self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes, room: int) -> bytes:
        """At most ``room + 1`` bytes of output: more than ``room`` means too large.

        zlib keeps the input it had no room to expand (``unconsumed_tail``);
        it is never fed again, as the body is refused or cut there.
        """
        try:
            out = self._zlib.decompress(data, room + 1)
        except zlib.error:
            if not (self._raw_fallback and not self._started):
                raise
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._zlib.decompress(data, room + 1)
        self._started = True
        return out

    def finish(self) -> bytes:
        """What zlib still holds at the end of the body (every input byte is expanded by then)."""
        return self._zlib.flush()


class _Identity:
    """An uncompressed body: chunks pass as they are."""

    def feed(self, data: bytes, room: int) -> bytes:  # noqa: ARG002 - the _Inflater interface
        """The chunk itself."""
        return data

    def finish(self) -> bytes:
        """Nothing is held back."""
        return b""


async def read_body(
    response: httpx.Response,
    *,
    limit: int,
    what: str,
    truncate: bool = False,
    setting: str = "the provider's base URL",
) -> bytes:
    """Read a streamed answer's body, decompressed, never holding more than ``limit`` bytes.

    Over the limit: with ``truncate``, the first ``limit`` bytes (an error
    answer, read for its message); otherwise :class:`BodyTooLarge` at once,
    the rest never read. ``what`` names the endpoint in the message and
    ``setting`` the base URL's setting in the hint. A ``Content-Length`` over
    the limit is refused before reading anything.
    """
    status = response.status_code
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in {"identity", "", "gzip", "x-gzip", "deflate"}:
        raise BadBody(
            f"{what} answered with an unsupported Content-Encoding",
            hint=f"dashtam asks for gzip or deflate only; check {setting}",
            http_status=status,
        )
    inflater = _Identity() if encoding in {"identity", ""} else _Inflater(encoding)
    declared = response.headers.get("Content-Length", "")
    plain = isinstance(inflater, _Identity)
    if plain and not truncate and declared.isdigit() and int(declared) > limit:
        raise _too_large(what, limit, status, setting)
    if response.is_stream_consumed:
        # Read already (an in-memory transport's answer, made from bytes): the
        # memory is spent, but the limit still holds.
        content = response.content
        if len(content) > limit and not truncate:
            raise _too_large(what, limit, status, setting)
        return content[:limit]
    body = bytearray()
    try:
        async for chunk in response.aiter_raw():
            data = inflater.feed(chunk, limit - len(body))
            body += data
            if len(body) > limit:
                break
        else:
            body += inflater.finish()
    except zlib.error:
        raise BadBody(
            f"{what} answered with a compressed body that does not decompress",
            hint="the answer was damaged on the way; retry later",
            http_status=status,
        ) from None
    if len(body) > limit and not truncate:
        raise _too_large(what, limit, status, setting)
    return bytes(body[:limit])


def _too_large(what: str, limit: int, status: int, setting: str) -> BodyTooLarge:
    return BodyTooLarge(
        f"{what} answered with more than {size_text(limit)} (HTTP {status}); "
        "dashtam stopped reading it",
        hint=f"no real answer is that large: check {setting} (and any proxy in between), "
        "then retry",
        http_status=status,
    )


_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
# Every byte but the brackets and quotes, deleted by bytes.translate; braces read as brackets.
_NOT_STRUCTURE: Final = bytes(range(256)).translate(None, b'[]{}"')
_BRACES_AS_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")


def _nesting_within(data: bytes, depth: int) -> bool:
    """Whether JSON ``data`` nests no deeper than ``depth`` (a quick scan, no parsing).

    Escapes out, then everything but brackets and quotes, then the strings;
    what is left is the bracket structure, and each round of removing the
    innermost pairs peels one level. Braces count as brackets: one kind of
    pair, removed in one scan, so a round never peels two levels (``{[]}``
    is two). Unbalanced input is left to the parser.

    Most strings hold no bracket, so they are left as ``""``: removing every
    ``""`` at once keeps each remaining quote's parity (whether it opens or
    closes a string) and moves no bracket in or out of a string (two quotes
    side by side have no bracket between them), so only the few strings
    with brackets are left for the slower split.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    shape = data.translate(_BRACES_AS_BRACKETS, _NOT_STRUCTURE)
    if b'"' in shape:
        shape = shape.replace(b'""', b"")
        if b'"' in shape:
            shape = b"".join(shape.split(b'"')[::2])
    for _ in range(depth):
        if not shape:
            return True
        peeled = shape.replace(b"[]", b"")
        if peeled == shape:
            return True
        shape = peeled
    return not shape


def load_json(
    data: bytes,
    *,
    what: str,
    status: int | None = None,
    setting: str = "the provider's base URL",
    typed: Callable[[bytes], object | None] | None = None,
    **options: Any,  # noqa: ANN401 - json.loads keywords
) -> Any:  # noqa: ANN401 - any JSON
    """Parse ``data`` as JSON (``options`` go to ``json.loads``); nesting is bounded.

    ``typed``, when given, is a provider's decoder for the shape it expects
    (faster than ``json.loads``): its answer is taken unless it is None, which
    leaves the body to ``json.loads``.

    Raises :class:`BadBody` for nesting deeper than :data:`MAX_JSON_DEPTH`
    (which the parser would meet as a RecursionError), and ``ValueError``
    (as ``json.loads`` does) for anything that is not JSON.
    """
    too_deep = BadBody(
        f"{what} answered{'' if status is None else f' HTTP {status}'} with JSON nested "
        f"more than {MAX_JSON_DEPTH} levels deep",
        hint=f"no real answer is shaped like that: check {setting}",
        http_status=status,
    )
    if not _nesting_within(data, MAX_JSON_DEPTH):
        raise too_deep
    if typed is not None:
        decoded = typed(data)
        if decoded is not None:
            return decoded
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise too_deep from None
