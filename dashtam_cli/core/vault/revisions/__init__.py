"""The vault's Alembic revisions, one file per schema version (see ``migrations``).

Alembic loads these files by path; they are never imported as modules of
this package. A released revision is frozen: a change of schema is a new
revision, never an edit of an old one.
"""
