"""Sealed fields bound to their owner (sealing format 2).

Version 3 marks the sealing format 2, in which every sealed field is bound to
its row's owner: a dashtam that knows only format 1 then refuses the vault as
too new instead of reporting every field as tampered with. The re-sealing
itself needs the key, so it runs when the vault is opened
(``Vault.upgrade_seal_format``), not here. The index serves the per-connection
account lookups every fetch makes. Frozen; downgrades are not supported
(``downgrade()`` raises).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index accounts by connection."""
    op.create_index("ix_accounts_connection", "accounts", ["connection_id"])


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
