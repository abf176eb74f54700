"""Charts drawn by pygal as SVG on the server: no script, no inline style, nothing from the network.

pygal puts a ``<style>`` and a ``<script>`` in each SVG; the page's
Content-Security-Policy allows neither inline, so both are taken out: the
style, the same for every chart, is served as ``/static/charts.css``, and the
tooltips script is not wanted (everything a tooltip says is in the tables).
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Sequence
    from decimal import Decimal

    from dashtam_cli.core.models import Account, CashFlow, NetWorth, NetWorthPoint, Position

__all__ = ["allocation_charts", "cashflow_charts", "chart_css", "history_charts", "holding_charts"]

SVG: Final = "http://www.w3.org/2000/svg"
XLINK: Final = "http://www.w3.org/1999/xlink"
# Every chart's outer <svg> has this class; pygal's CSS names its own id instead.
CHART_CLASS: Final = "pygal-chart"


def _config() -> dict[str, Any]:
    return {
        "js": [],  # no tooltips script (pygal would load it from a CDN)
        "disable_xml_declaration": True,
        "height": 320,
        "width": 800,
        "x_label_rotation": 30,
        "show_minor_x_labels": True,
        "truncate_legend": 30,
        "legend_at_bottom": True,
        "print_values": False,
    }


def _pygal() -> Any:  # noqa: ANN401 - pygal is untyped
    import sys

    import pygal

    # pygal adds an import hook for its map plugins (pygal.maps.*), which dashtam does not
    # use: it is an old-style finder that every later failed import warns about.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PluginImportFixer"]
    return pygal


def _chart(kind: str, title: str) -> Any:  # noqa: ANN401 - pygal's charts are untyped
    pygal = _pygal()
    chart = getattr(pygal, kind)(**_config())
    chart.title = title
    return chart


def _clean(chart: Any) -> tuple[str, str]:  # noqa: ANN401 - pygal's charts are untyped
    """The chart's SVG without style, script or style attributes; and its CSS, for all charts."""
    ET.register_namespace("", SVG)
    ET.register_namespace("xlink", XLINK)
    tree: ET.Element = chart.render_tree()
    prefix = f"#{tree.get('id')}"
    css: list[str] = []
    for parent in list(tree.iter()):
        for child in list(parent):
            tag = child.tag.rsplit("}", 1)[-1] if isinstance(child.tag, str) else ""
            if tag == "style":
                css.append(child.text or "")
                parent.remove(child)
            elif tag == "script" or "tooltip" in (child.get("class") or "").split():
                # The tooltip box itself; the bars and dots that would trigger it
                # ("tooltip-trigger") are the chart and stay.
                parent.remove(child)
        parent.attrib.pop("style", None)
    tree.attrib.pop("id", None)
    text = ET.tostring(tree, encoding="unicode")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    return text, "\n".join(css).replace(prefix, f".{CHART_CLASS}")


@functools.cache
def chart_css() -> str:
    """The CSS of every chart (pygal's default style), served as a file of the dashboard."""
    chart = _chart("Line", "")
    chart.add("", [1, 2])
    return _clean(chart)[1]


def _number(value: Decimal | None) -> float | None:
    # A chart only draws: the figures shown as text come from the tables.
    return None if value is None else float(value)


def history_charts(points: Sequence[NetWorthPoint]) -> list[str]:
    """One line chart per currency of the net worth at the end of each month (gaps left empty)."""
    from dashtam_cli.core.models import currency_label

    series: dict[str, dict[str, list[NetWorthPoint]]] = {}
    for point in points:
        series.setdefault(point.currency, {}).setdefault(point.group, []).append(point)
    svgs = []
    for currency, groups in series.items():
        chart = _chart("Line", f"Net worth ({currency_label(currency)})")
        periods = sorted({p.period for items in groups.values() for p in items})
        chart.x_labels = [p.strftime("%Y-%m") for p in periods]
        for group, items in groups.items():
            at = {p.period: p.total for p in items}
            chart.add(group, [_number(at.get(p)) for p in periods], allow_interruptions=True)
        svgs.append(_clean(chart)[0])
    return svgs


def cashflow_charts(flows: Sequence[CashFlow]) -> list[str]:
    """One bar chart per currency of the money in and out each month (transfers, trades apart)."""
    from dashtam_cli.core.models import currency_label

    by_currency: dict[str, list[CashFlow]] = {}
    for flow in flows:
        by_currency.setdefault(flow.currency, []).append(flow)
    svgs = []
    for currency, items in by_currency.items():
        chart = _chart("Bar", f"Cash flow ({currency_label(currency)})")
        periods = sorted({f.period for f in items})
        chart.x_labels = [p.strftime("%Y-%m") for p in periods]
        for group in sorted({f.group for f in items}):
            at = {f.period: f for f in items if f.group == group}
            inflow = [_number(at[p].inflow) if p in at else None for p in periods]
            outflow = [_number(at[p].outflow) if p in at else None for p in periods]
            label = "" if group == "total" else f" ({group})"
            chart.add(f"in{label}", inflow)
            chart.add(f"out{label}", outflow)
        svgs.append(_clean(chart)[0])
    return svgs


# Holdings drawn one by one; the rest are summed as "other".
TOP_HOLDINGS: Final = 10


def allocation_charts(rows: Sequence[NetWorth]) -> list[str]:
    """One pie per currency of `networth --by asset-type` (what is owed, negative, is left out)."""
    from dashtam_cli.core.models import currency_label

    by_currency: dict[str, list[NetWorth]] = {}
    for row in rows:
        if row.total > 0:
            by_currency.setdefault(row.currency, []).append(row)
    svgs = []
    for currency, items in by_currency.items():
        chart = _chart("Pie", f"Allocation by asset type ({currency_label(currency)})")
        for row in sorted(items, key=lambda r: r.total, reverse=True):
            chart.add(row.group, [_number(row.total)])
        svgs.append(_clean(chart)[0])
    return svgs


def holding_charts(positions: Sequence[Position], accounts: Sequence[Account]) -> list[str]:
    """One bar chart per currency of the largest holdings by market value, across accounts."""
    from decimal import Decimal

    from dashtam_cli.core.models import currency_label, option_label

    currency = {a.id: a.currency for a in accounts}
    sums: dict[str, dict[str, Decimal]] = {}
    for position in positions:
        if position.market_value is None or position.account_id not in currency:
            continue
        name = option_label(position.symbol) or position.symbol
        held = sums.setdefault(currency[position.account_id], {})
        held[name] = held.get(name, Decimal(0)) + position.market_value
    svgs = []
    for unit, held in sums.items():
        ranked = sorted(held.items(), key=lambda item: item[1], reverse=True)
        top, rest = ranked[:TOP_HOLDINGS], ranked[TOP_HOLDINGS:]
        if rest:
            top.append(("other", sum((v for _, v in rest), Decimal(0))))
        chart = _chart("HorizontalBar", f"Largest holdings ({currency_label(unit)})")
        for name, value in top:
            chart.add(name, [_number(value)])
        svgs.append(_clean(chart)[0])
    return svgs
