"""Keep pytest out of tests/bench: these are benchmark scripts run by `nox -s bench`, not tests."""

collect_ignore_glob = ["*.py"]
