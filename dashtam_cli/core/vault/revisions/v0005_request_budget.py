"""Daily request budgets of providers that have one.

Requests spent per day against a provider's daily budget (SimpleFIN's Bridge
allows about 24 a day per access). ``scope`` is the provider's digest of what
the budget belongs to, never a credential; ``day`` is the UTC date. Not
sealed: a count says nothing about anyone's money. Frozen; downgrades are not
supported (``downgrade()`` raises).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create request_budget."""
    op.create_table(
        "request_budget",
        sa.Column("scope", sa.Text, primary_key=True),
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("used", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
