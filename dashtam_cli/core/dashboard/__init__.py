"""The read-only local web dashboard (`dashtam dashboard`): its data, charts, pages and server.

Its libraries (starlette, uvicorn, jinja2, pygal) are imported only by the
modules of this package, which only the dashboard command loads.
"""

from __future__ import annotations
