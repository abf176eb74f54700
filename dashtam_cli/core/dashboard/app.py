"""The dashboard's routes (Starlette), each a read of the vault, behind the :class:`Guard`."""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

from dashtam_cli.core.dashboard.guard import Guard
from dashtam_cli.core.errors import DashtamError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from dashtam_cli.core.settings import Settings
    from dashtam_cli.core.vault.vault import OpenOptions

    _Page = Callable[[Request], Awaitable[str]]

__all__ = ["build_app"]

log = logging.getLogger(__name__)


def _page_number(raw: str | None) -> int:
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


def build_app(settings: Settings, open_options: OpenOptions, *, port: int, token: str) -> Guard:
    """The guarded ASGI app answering on ``127.0.0.1:port``; ``token`` opens the first session."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from dashtam_cli.core.dashboard import charts, data, pages

    def shown(work: _Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return HTMLResponse(await work(request))
            except DashtamError as exc:
                log.warning("%s", exc.message)
                text = html.escape(exc.message + (f" ({exc.hint})" if exc.hint else ""))
                return HTMLResponse(f"<!doctype html><title>dashtam</title><p>{text}</p>", 500)

        return endpoint

    async def overview(_: Request) -> str:
        return pages.render_overview(await data.overview(settings, open_options))

    async def transactions(request: Request) -> str:
        found = await data.transactions_page(
            settings,
            open_options,
            page=_page_number(request.query_params.get("page")),
            query=request.query_params.get("q", ""),
            kind=request.query_params.get("kind", ""),
            account=request.query_params.get("account", ""),
        )
        return pages.render_transactions(found)

    def stylesheet(text: Callable[[], str]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(_: Request) -> Response:
            return HTMLResponse(text(), media_type="text/css")

        return endpoint

    app = Starlette(
        routes=[
            Route("/", shown(overview), methods=["GET"]),
            Route("/transactions", shown(transactions), methods=["GET"]),
            Route("/static/dashboard.css", stylesheet(pages.css), methods=["GET"]),
            Route("/static/charts.css", stylesheet(charts.chart_css), methods=["GET"]),
        ]
    )
    return Guard(app, port=port, token=token)
