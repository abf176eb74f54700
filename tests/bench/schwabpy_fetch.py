"""The fastest way a schwab-py user fetches what `dashtam sync` does: its async client and gather.

Run as its own process by sync_bench: accounts with positions, then every
account's two years of transactions (two one-year windows, Schwab's limit),
all requests at once. schwab-py sends every request to Schwab's own host,
so its HTTP client gets a transport that sends them to the sandbox instead,
trusting the sandbox's CA. Prints one JSON line: requests, accounts, transactions.

Usage: python schwabpy_fetch.py BASE_URL CA_FILE CLIENT_ID CLIENT_SECRET TOKEN_JSON
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import sys
import warnings
from typing import Any

import httpx


class ToSandbox(httpx.AsyncHTTPTransport):
    """Sends each request to the sandbox's origin instead of the one in its URL; counts them."""

    def __init__(self, base_url: str, ca_file: str) -> None:
        """A pooled HTTPS transport trusting only the sandbox's CA."""
        super().__init__(verify=ssl.create_default_context(cafile=ca_file))
        self.origin = httpx.URL(base_url)
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Rewrite the origin, keep the path and query."""
        self.requests += 1
        request.url = request.url.copy_with(
            scheme=self.origin.scheme, host=self.origin.host, port=self.origin.port
        )
        return await super().handle_async_request(request)


async def fetch(argv: list[str]) -> dict[str, Any]:
    """Accounts, then all transactions at once; what was fetched."""
    base_url, ca_file, client_id, secret, token_json = argv
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # authlib's notice about httpx2
        # Neither ships type information; the bench's own session installs them.
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
            AsyncOAuth2Client,
        )
        from schwab.client import AsyncClient  # type: ignore[import-untyped, import-not-found, unused-ignore]

    transport = ToSandbox(base_url, ca_file)
    session = AsyncOAuth2Client(
        client_id,
        client_secret=secret,
        token=json.loads(token_json),
        token_endpoint=f"{base_url}/v1/oauth/token",
        leeway=300,
        transport=transport,
    )
    client = AsyncClient(client_id, session, enforce_enums=False)
    numbers = (await client.get_account_numbers()).json()
    accounts = (await client.get_accounts(fields=[client.Account.Fields.POSITIONS])).json()
    now = dt.datetime.now(dt.UTC)
    windows = [
        (now - dt.timedelta(days=730), now - dt.timedelta(days=365)),
        (now - dt.timedelta(days=365), now),
    ]
    answers = await asyncio.gather(
        *(
            client.get_transactions(item["hashValue"], start_date=start, end_date=end)
            for item in numbers
            for start, end in windows
        )
    )
    transactions = 0
    for answer in answers:
        answer.raise_for_status()
        transactions += len(answer.json())
    await client.close_async_session()
    return {
        "requests": transport.requests,
        "accounts": len(accounts),
        "transactions": transactions,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(fetch(sys.argv[1:]))))  # noqa: T201
