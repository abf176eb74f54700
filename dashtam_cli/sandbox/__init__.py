"""A built-in sandbox institution (Schwab's Trader API, SimpleFIN, Plaid) for demos and tests."""
