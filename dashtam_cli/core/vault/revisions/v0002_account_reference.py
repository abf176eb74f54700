"""Accounts keep the provider's account reference, sealed.

The provider's own reference for an account (Schwab's hashValue), sealed, so a
fetch soon after another need not ask for the numbers again. Frozen; downgrades
are not supported (``downgrade()`` raises).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add accounts.provider_ref."""
    op.add_column("accounts", sa.Column("provider_ref", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
