"""The dashboard's pages as HTML, by Jinja2 with autoescape (provider text is untrusted)."""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decimal import Decimal

    import jinja2

    from dashtam_cli.core.dashboard.data import Overview, TransactionsPage

__all__ = ["css", "render_export", "render_overview", "render_transactions"]


def _money(value: Decimal | None) -> str:
    """The figure exactly as the CLI's JSON prints it; nothing for a gap."""
    return "" if value is None else f"{value:f}"


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    from dashtam_cli.core.models import currency_label

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dashtam_cli.core.dashboard", "templates"),
        autoescape=True,  # every value is escaped unless marked safe (only our own SVG is)
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["currency"] = currency_label
    return env


def css() -> str:
    """The dashboard's own stylesheet."""
    return resources.files(__package__).joinpath("static/dashboard.css").read_text("utf-8")


def _render(template: str, **values: Any) -> str:  # noqa: ANN401 - template values
    return _environment().get_template(template).render(**values)


def _overview_values(data: Overview) -> dict[str, Any]:
    from markupsafe import Markup

    from dashtam_cli.core.dashboard.charts import (
        allocation_charts,
        cashflow_charts,
        history_charts,
        holding_charts,
    )
    from dashtam_cli.core.models import KINDS

    return {
        "data": data,
        # Our own SVG, built as an XML tree from numbers and dates: the only markup marked safe.
        "history_svgs": [Markup(s) for s in history_charts(data.history)],  # noqa: S704
        "cashflow_svgs": [Markup(s) for s in cashflow_charts(data.cashflow)],  # noqa: S704
        "allocation_svgs": [Markup(s) for s in allocation_charts(data.allocation)],  # noqa: S704
        "holding_svgs": [
            Markup(s)  # noqa: S704
            for s in holding_charts(data.positions, data.accounts)
        ],
        "kinds": KINDS,
    }


def render_overview(data: Overview) -> str:
    """The front page."""
    return _render("overview.html", inline_css=None, **_overview_values(data))


def render_transactions(page: TransactionsPage) -> str:
    """A page of transactions, with the search and filter form and the links to the other pages."""
    from dashtam_cli.core.models import KINDS

    return _render("transactions.html", inline_css=None, page=page, kinds=KINDS)


def render_export(data: Overview, everything: TransactionsPage) -> str:
    """One self-contained file: the front page and every transaction, its CSS inside."""
    from dashtam_cli.core.dashboard.charts import chart_css

    return _render(
        "export.html",
        inline_css=css() + "\n" + chart_css(),
        page=everything,
        **_overview_values(data),
    )
