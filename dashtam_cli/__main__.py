"""Run dashtam with ``python -m dashtam_cli``."""

from __future__ import annotations

from dashtam_cli.cli.entry import main

main()
