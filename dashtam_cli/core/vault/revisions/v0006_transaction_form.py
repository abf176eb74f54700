"""The form a transaction's text is stored in.

``transactions.form``: 1 when the sealed text is the record's JSON line, as
``--format jsonl`` prints it (see ``core/lines.py``), so printing it is
writing it; NULL for rows stored before (pydantic's ``model_dump_json``),
whose shape is checked as they are printed. Not sealed: it says how a text
is written, nothing of what it says. Frozen; downgrades are not supported
(``downgrade()`` raises).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add transactions.form."""
    op.add_column("transactions", sa.Column("form", sa.Integer, nullable=True))


def downgrade() -> None:
    """Not supported: a vault only moves forward."""
    msg = "dashtam's schema revisions cannot be downgraded"
    raise NotImplementedError(msg)
