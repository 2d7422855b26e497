"""Request dependencies as ``Annotated`` aliases: the app's services and the calling principal by role."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import Principal, authenticate, require
from serving.queue import JobQueue
from serving.settings import Settings
from serving.store import Store

bearer = HTTPBearer(auto_error=False, description="an API token from `preread token create --role ROLE`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


def current_principal(request: Request,
                      creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    header = request.headers.get("authorization")
    return authenticate(request.app.state.db, request.app.state.settings.secret_key, header if header else None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
AnyUser = Annotated[Principal, Depends(current_principal)]


def _role(*roles: str):
    def dep(p: AnyUser) -> Principal:
        return require(p, *roles)

    return dep


Reader = Annotated[Principal, Depends(_role("reader"))]
Submitter = Annotated[Principal, Depends(_role("submitter"))]
Admin = Annotated[Principal, Depends(_role())]
ReaderOrSubmitter = Annotated[Principal, Depends(_role("reader", "submitter"))]
