"""Alembic migrations of the worklist store; applied at start by :func:`serving.migrate.upgrade`."""
