"""Plaid's wire: headers, error JSON read and sanitised, retries, the audit, the Link page."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from dashtam_cli.core.errors import ConfigError, ReauthRequired
from dashtam_cli.core.providers.base import AppKeys, CallRecord, LinkRequest
from dashtam_cli.core.providers.plaid import PROVIDER
from dashtam_cli.core.providers.plaid.protocol import PlaidCaller, PlaidFailure
from dashtam_cli.core.resilience import Backoff

KEYS = AppKeys("client-abc", "secret-0123456789abcdef", "sandbox", None, "environment")
NO_WAIT = Backoff(attempts=3, base=0.0, cap=0.0)


def _error(status: int, code: str, error_type: str, **extra: Any) -> httpx.Response:
    body = {
        "error_type": error_type,
        "error_code": code,
        "error_message": "the message",
        "display_message": None,
        "request_id": "req-42",
        **extra,
    }
    return httpx.Response(status, json=body)


def _call(
    answers: list[httpx.Response], path: str = "/accounts/get"
) -> tuple[object, list[CallRecord], list[httpx.Request]]:
    """POST through a caller whose transport answers ``answers`` in turn: the result or the error."""
    sent: list[httpx.Request] = []
    records: list[CallRecord] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0)

    async def record(call: CallRecord) -> None:
        records.append(call)

    async def run() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            caller = PlaidCaller(
                client,
                KEYS,
                origin="https://plaid.test",
                record=record,
                relogin="dashtam connect plaid --update bank",
                backoff=NO_WAIT,
            )
            try:
                return await caller.post(path, {"access_token": "access-sandbox-xyz"})
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                return exc

    return asyncio.run(run()), records, sent


def test_every_call_is_a_json_post_with_the_version_and_the_keys_in_headers() -> None:
    """POST, JSON body without the keys, Plaid-Version 2020-09-14, PLAID-CLIENT-ID/PLAID-SECRET."""
    result, records, sent = _call([httpx.Response(200, text='{"request_id": "req-1", "n": 1.10}')])
    assert result == {"request_id": "req-1", "n": Decimal("1.10")}
    (request,) = sent
    assert request.method == "POST"
    assert request.headers["Plaid-Version"] == "2020-09-14"
    assert request.headers["PLAID-CLIENT-ID"] == "client-abc"
    assert request.headers["PLAID-SECRET"] == "secret-0123456789abcdef"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"access_token": "access-sandbox-xyz"}
    assert [(r.operation, r.outcome, r.correlation_id) for r in records] == [
        ("accounts/get", "ok", "req-1")
    ]


def test_item_login_required_is_reauth_with_the_update_command() -> None:
    """``ITEM_LOGIN_REQUIRED``: ReauthRequired (exit 4) whose hint is the update command; not retried."""
    result, records, sent = _call([_error(400, "ITEM_LOGIN_REQUIRED", "ITEM_ERROR")])
    assert isinstance(result, ReauthRequired)
    assert result.exit_code == 4
    assert result.hint == "run: dashtam connect plaid --update bank"
    assert "req-42" in result.message
    assert len(sent) == 1
    assert records[0].correlation_id == "req-42"


@pytest.mark.parametrize("code", ["INVALID_API_KEYS", "INVALID_SECRET", "INVALID_CLIENT_ID"])
def test_wrong_keys_are_a_configuration_error_with_a_hint(code: str) -> None:
    """The app's keys refused: a ConfigError naming the settings, never the secret."""
    result, _, sent = _call([_error(400, code, "INVALID_INPUT")])
    assert isinstance(result, ConfigError)
    assert "PLAID_SECRET" in (result.hint or "")
    assert "secret-0123456789abcdef" not in f"{result.message} {result.hint}"
    assert len(sent) == 1


@pytest.mark.parametrize(
    "answer",
    [
        _error(429, "RATE_LIMIT_EXCEEDED", "RATE_LIMIT_EXCEEDED"),
        _error(500, "INTERNAL_SERVER_ERROR", "API_ERROR"),
        httpx.Response(502, text="<html>bad gateway</html>"),
    ],
)
def test_temporary_answers_are_retried_with_backoff(answer: httpx.Response) -> None:
    """Rate limits and 5xx are retried; each attempt audited; the retry's answer is returned."""
    result, records, sent = _call([answer, httpx.Response(200, json={"ok": True})])
    assert result == {"ok": True}
    assert len(sent) == 2
    assert [r.outcome for r in records] == ["error", "ok"]


def test_a_temporary_answer_that_lasts_is_raised_after_the_attempts() -> None:
    """Three 500s: a PlaidFailure with Plaid's code, after exactly three attempts."""
    answers = [_error(500, "INTERNAL_SERVER_ERROR", "API_ERROR") for _ in range(3)]
    result, _, sent = _call(answers)
    assert isinstance(result, PlaidFailure)
    assert result.code == "INTERNAL_SERVER_ERROR"
    assert len(sent) == 3


def test_plaids_error_text_is_sanitised() -> None:
    """``display_message`` with escapes, newlines and the item's token: one clean, masked line."""
    from dashtam_cli.core.redact import register_secret

    register_secret("access-sandbox-xyz")
    hostile = "\x1b[31mred\x1b[0m\nsecond line access-sandbox-xyz"
    result, records, _ = _call(
        [_error(400, "PRODUCT_NOT_READY", "ITEM_ERROR", display_message=hostile)]
    )
    assert isinstance(result, PlaidFailure)
    for text in (result.message, records[0].detail or ""):
        assert "\x1b" not in text
        assert "\n" not in text
        assert "access-sandbox-xyz" not in text
        assert "red second line" in text


def _page(environ: dict[str, str]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        del request
        return httpx.Response(200, json={"link_token": "link-sandbox-</script>-token"})

    async def record(call: CallRecord) -> None:
        del call

    async def run() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await PROVIDER.hosted_page(
                client, KEYS, LinkRequest("dashtam-abc"), record=record, environ=environ
            )

    return asyncio.run(run())


def test_the_link_page_loads_plaids_script_and_its_csp_follows_plaids_guidance() -> None:
    """Real hosts: Plaid's CDN script and frame, the API host to connect to; the token escaped."""
    page = _page({})
    assert page.script_sources == ("https://cdn.plaid.com/link/v2/stable/link-initialize.js",)
    assert page.frame_sources == ("https://cdn.plaid.com",)
    assert page.connect_sources == ("https://sandbox.plaid.com",)
    assert "</script>-token" not in page.body
    assert "link-sandbox-\\u003c/script\\u003e-token" in page.body


def test_an_overridden_base_url_serves_the_stand_in_and_connects_to_its_origin_only() -> None:
    """``DASHTAM_PLAID_BASE_URL`` with a path: the script under it, connect-src its origin alone."""
    page = _page({"DASHTAM_PLAID_BASE_URL": "https://127.0.0.1:9443/plaid"})
    assert page.script_sources == (
        "https://127.0.0.1:9443/plaid/link/v2/stable/link-initialize.js",
    )
    assert page.connect_sources == ("https://127.0.0.1:9443",)
    assert page.frame_sources == ()
    assert (
        '<script nonce="{{nonce}}" '
        'src="https://127.0.0.1:9443/plaid/link/v2/stable/link-initialize.js"></script>'
    ) in page.body


def test_the_link_page_loads_the_script_before_starting_link_and_names_its_setting() -> None:
    """The body loads Link's script (the page itself adds none), then calls Plaid.create.

    And a port in use is blamed on ``PLAID_REDIRECT_URI``, where the listener's
    address comes from.
    """
    page = _page({})
    loaded = page.body.find(
        '<script nonce="{{nonce}}" '
        'src="https://cdn.plaid.com/link/v2/stable/link-initialize.js"></script>'
    )
    assert loaded != -1
    assert loaded < page.body.index("Plaid.create(")
    assert page.setting == "PLAID_REDIRECT_URI"
