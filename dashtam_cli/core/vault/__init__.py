"""The local encrypted vault: SQLite through SQLAlchemy, fields sealed with AES-256-GCM."""
