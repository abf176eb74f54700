"""Initial schema: credentials, connections, tokens, cache, audit log.

Frozen: the tables as dashtam's first release made them, written out here and
never derived from ``schema.py``. Downgrades are not supported: a vault only
ever moves forward, and ``downgrade()`` raises.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the first tables."""
    op.create_table(
        "vault_meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("applied_at", sa.Text, nullable=False),
    )
    op.create_table(
        "provider_credentials",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("provider", sa.Text, nullable=False, unique=True),
        sa.Column("client_id", sa.LargeBinary, nullable=False),
        sa.Column("client_secret", sa.LargeBinary, nullable=False),
        sa.Column("redirect_uri", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "connections",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "connection_id",
            sa.Text,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("access_token", sa.LargeBinary, nullable=False),
        sa.Column("refresh_token", sa.LargeBinary),
        sa.Column("token_type", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Text, nullable=False),
        sa.Column("access_expires_at", sa.Text, nullable=False),
        sa.Column("refresh_expires_at", sa.Text),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "connection_id",
            sa.Text,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("number", sa.LargeBinary, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("fetched_at", sa.Text, nullable=False),
    )
    op.create_table(
        "positions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("fetched_at", sa.Text, nullable=False),
    )
    op.create_table(
        "transactions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("occurred_at", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("fetched_at", sa.Text, nullable=False),
    )
    op.create_index("ix_transactions_account_time", "transactions", ["account_id", "occurred_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("connection_id", sa.Text),
        sa.Column("connection_name", sa.Text),
        sa.Column("provider", sa.Text),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("correlation_id", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
