"""Sync: kinds, balance snapshots, sync points, opaque credentials.

The provider interface and incremental sync. Frozen; downgrades are not
supported (``downgrade()`` raises).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add kinds, credential records, balance snapshots and sync points."""
    # A connection whose provider does not refresh keeps its credential record
    # here, sealed, instead of a token pair.
    op.add_column("connections", sa.Column("secret", sa.LargeBinary, nullable=True))
    # The neutral kind of a transaction (trade, dividend, ...), which queries
    # filter on; NULL for rows cached before, whose kind is read from its type.
    op.add_column("transactions", sa.Column("kind", sa.Text, nullable=True))
    op.create_index(
        "ix_transactions_account_kind", "transactions", ["account_id", "kind", "occurred_at"]
    )
    # Each sync keeps the positions it saw: the newest per account are current.
    op.create_index("ix_positions_account_time", "positions", ["account_id", "fetched_at"])
    # A balance snapshot per account per sync, sealed.
    op.create_table(
        "balances",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column(
            "account_id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("at", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_balances_account_time", "balances", ["account_id", "at"])
    # Where each account's last successful sync reached: the time its window
    # ended, and the provider's cursor (sealed) for providers that page by one.
    op.create_table(
        "sync_points",
        sa.Column(
            "id", sa.Text, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "connection_id",
            sa.Text,
            sa.ForeignKey("connections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("through", sa.Text, nullable=False),
        sa.Column("cursor", sa.LargeBinary, nullable=True),
        sa.Column("synced_at", sa.Text, nullable=False),
    )
    op.create_index("ix_sync_points_connection", "sync_points", ["connection_id"])


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
