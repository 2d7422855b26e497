"""preread pipeline stages: ingest, preprocess, infer, measure, report, discordance.

Import direction: ``models`` ← ``pipelines`` ← ``serving``.
"""

from pipelines.errors import PrereadError  # noqa: F401
