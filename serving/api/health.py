"""``GET /health``: liveness and the queue's size; the only route without a token."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from serving.api.deps import QueueDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    active_jobs: int
    max_queue: int


@router.get("/health", response_model=Health, summary="Liveness (no token)")
def health(queue: QueueDep) -> Health:
    return Health(status="ok", active_jobs=queue.active_count(), max_queue=queue.max_queue)
