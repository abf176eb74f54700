"""Records the core returns to its callers, as pydantic models with stable field names."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 - pydantic resolves annotations at runtime

from pydantic import BaseModel, ConfigDict

__all__ = ["PathEntry"]


class Record(BaseModel):
    """Base of every record: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PathEntry(Record):
    """One directory or file dashtam uses."""

    name: str
    path: Path
    exists: bool
