"""Errors raised by ``models`` (which imports no project package).

``pipelines.errors.ModelError`` derives from :class:`ModelError` here *and* from ``PrereadError``; code in
``pipelines`` and ``serving`` re-raises a ``models`` error as that typed error with :func:`as_preread`
semantics (see ``pipelines.infer``), so the CLI prints one line and exits 2.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model could not be found, loaded, verified or run (missing file, hash mismatch, wrong contract)."""

    code = "model_error"
    http_status = 500
