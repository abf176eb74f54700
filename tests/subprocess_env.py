"""The variables a test passes on to a subprocess it starts with an environment of its own."""

from __future__ import annotations

import os


def coverage_variables() -> dict[str, str]:
    """Coverage.py's variables of this process, so a child started with a clean env is measured.

    Under ``coverage run`` (``patch = ["subprocess"]``) a Python child starts
    measuring when it inherits ``COVERAGE_PROCESS_CONFIG``; a test that builds
    its child's environment from nothing must hand them on, or what the child
    runs counts as uncovered. Outside coverage this is empty.
    """
    return {name: value for name, value in os.environ.items() if name.startswith("COVERAGE_")}
