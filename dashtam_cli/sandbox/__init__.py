"""A built-in sandbox institution that speaks Schwab's OAuth and Trader API, for demos and tests."""
