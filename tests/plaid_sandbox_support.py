"""A Plaid client of the running sandbox for the tests: JSON in, exact decimals out."""

from __future__ import annotations

import decimal
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from sandbox_support import RunningSandbox


class PlaidApi:
    """Calls the sandbox's Plaid paths over HTTPS that verifies its CA; keeps what it sent."""

    def __init__(self, running: RunningSandbox) -> None:
        """Talk to ``running``'s ``/plaid``."""
        self.running = running
        self.http = running.client()
        self.sent: list[tuple[str, dict[str, Any]]] = []

    @property
    def root(self) -> str:
        """The Plaid base URL (what DASHTAM_PLAID_BASE_URL would be)."""
        return self.running.base_url + "/plaid"

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    def raw(
        self,
        path: str,
        body: dict[str, Any],
        *,
        keys: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``body`` (with the sandbox app's keys unless ``keys`` is False) to ``path``."""
        config = self.running.config
        if keys:
            body = {"client_id": config.plaid_client_id, "secret": config.plaid_secret, **body}
        self.sent.append((path, body))
        return self.http.post(
            self.root + path,
            content=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Plaid-Version": "2020-09-14",
                **(headers or {}),
            },
        )

    @staticmethod
    def parse(answer: httpx.Response) -> dict[str, Any]:
        """The answer's JSON, numbers as Decimal from their text."""
        body: dict[str, Any] = json.loads(answer.content, parse_float=decimal.Decimal)
        return body

    def call(self, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        """POST and expect ``status``; the parsed answer."""
        answer = self.raw(path, body)
        assert answer.status_code == status, answer.text[:500]
        return self.parse(answer)

    def error(
        self, path: str, body: dict[str, Any], code: str, status: int = 400
    ) -> dict[str, Any]:
        """POST and expect Plaid's error ``code`` with ``status``; the error body."""
        found = self.call(path, body, status)
        assert found["error_code"] == code, found
        return found

    def link(self, products: tuple[str, ...] = ("transactions", "investments")) -> tuple[str, str]:
        """A new item through /sandbox/public_token/create and the exchange: (access token, item id)."""
        public = self.call(
            "/sandbox/public_token/create",
            {"institution_id": "ins_109508", "initial_products": list(products)},
        )["public_token"]
        exchanged = self.call("/item/public_token/exchange", {"public_token": public})
        return exchanged["access_token"], exchanged["item_id"]

    def sync_all(
        self, token: str, cursor: str = "", count: int = 100
    ) -> tuple[list[dict[str, Any]], str]:
        """Page /transactions/sync from ``cursor`` to the end: (the pages, the last next_cursor)."""
        pages = []
        while True:
            page = self.call(
                "/transactions/sync", {"access_token": token, "cursor": cursor, "count": count}
            )
            pages.append(page)
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return pages, cursor
