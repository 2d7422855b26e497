"""The FastAPI application: ``create_app(settings)``.

Every 4xx/5xx answer is JSON ``{"error": code, "detail": message}``; a :class:`PrereadError` maps to its
class's ``http_status``. Request bodies above ``PREREAD_MAX_UPLOAD_MB`` are refused with 413 before they
are read. The viewer's static files are served under ``/viewer/``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.errors import InputTooLargeError, PrereadError, QueueFullError
from serving.api import admin, health, studies, worklist
from serving.db import Database
from serving.migrate import upgrade
from serving.queue import JobQueue
from serving.settings import Settings
from serving.store import Store

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "input_too_large",
               415: "unsupported_media_type", 422: "validation_error", 429: "queue_full"}


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """Pure ASGI middleware: 413 for a declared or streamed request body above the limit: ``max_bytes`` for
    study uploads, 1 MiB for every other route."""

    def __init__(self, app, max_bytes: int, other_max_bytes: int = 1 << 20, upload_path: str = "/studies"):
        self.app, self.upload_max, self.other_max, self.upload_path = app, max_bytes, other_max_bytes, upload_path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        return await _Limited(self.app, self.upload_max if scope.get("path") == self.upload_path
                              else min(self.other_max, self.upload_max))(scope, receive, send)


class _Limited:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    return await _error(400, "bad_request", "invalid Content-Length header")(scope, receive, send)
                if declared > self.max_bytes:
                    resp = _error(413, "input_too_large",
                                  f"request body of {declared} bytes is above the limit of {self.max_bytes}")
                    return await resp(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(f"request body above the limit of {self.max_bytes} bytes",
                                    hint="raise PREREAD_MAX_UPLOAD_MB or send the study from the PACS")
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _error(413, "input_too_large", f"request body above the limit of {self.max_bytes} bytes")(
                    scope, receive, send)


class _TooLarge(InputTooLargeError):
    """Raised inside the request when a streamed body passes the limit (answered 413 like any PrereadError)."""


class WorkerPool:
    """``PREREAD_WORKERS`` worker processes (``python -m serving.worker``), restarted when one exits."""

    def __init__(self, settings: Settings, n: int):
        self.settings, self.n = settings, n
        self.procs: dict[int, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True, name="worker-pool")

    def _env(self) -> dict:
        env = dict(os.environ)
        for name, value in self.settings.model_dump().items():
            if value is None:
                continue
            key = "PREREAD_" + name.upper()
            env[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env["PREREAD_DATA_DIR"] = str(Path(self.settings.data_dir).resolve())
        return env

    def _spawn(self, slot: int) -> None:
        wid = f"{os.uname().nodename}-{os.getpid()}-w{slot}"
        self.procs[slot] = subprocess.Popen([sys.executable, "-m", "serving.worker", "--id", wid], env=self._env())
        log.info("worker %s started (pid %d)", wid, self.procs[slot].pid)

    def start(self) -> None:
        for slot in range(self.n):
            self._spawn(slot)
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(2.0):
            for slot, proc in list(self.procs.items()):
                if proc.poll() is not None and not self._stop.is_set():
                    log.warning("worker slot %d exited with %s; restarting", slot, proc.returncode)
                    self._spawn(slot)

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()  # its job's lease will lapse and the job be retaken
                proc.wait()


def create_app(settings: Settings | None = None, *, start_workers: bool = False) -> FastAPI:
    """The service on ``settings`` (default: from the environment). The database is migrated now;
    ``start_workers`` starts the local worker pool with the app (``preread serve`` does)."""
    settings = settings or Settings()
    settings.ensure_dirs()
    db = Database(settings.db_url)
    upgrade(db, settings.data_dir / "migrate.lock")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = WorkerPool(settings, settings.workers) if start_workers and settings.workers > 0 else None
        poller = None
        if pool:
            pool.start()
        if start_workers and settings.dicomweb_url and settings.dicomweb_poll_s > 0:
            from serving.poller import Poller

            poller = Poller(settings, app.state.queue)
            poller.start()
        try:
            yield
        finally:
            if poller:
                poller.stop_event.set()
            if pool:
                pool.stop()
            db.dispose()

    app = FastAPI(title="preread worklist", version="1", lifespan=lifespan,
                  description="Pre-read assistant for chest CT: studies in, discordant ones first. "
                              "Every route but /health needs `Authorization: Bearer <token>`.")
    app.state.settings = settings
    app.state.db = db
    app.state.store = Store(db)
    app.state.queue = JobQueue(db, max_queue=settings.max_queue, max_attempts=settings.max_attempts,
                               lease_s=settings.lease_s, retry_backoff_s=settings.retry_backoff_s)

    @app.exception_handler(PrereadError)
    async def _preread_error(request: Request, err: PrereadError):
        headers = {"Retry-After": "30"} if isinstance(err, QueueFullError) else None
        if err.http_status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        if err.http_status >= 500:
            log.error("request failed: %s", err.one_line())
        return _error(err.http_status, err.code, str(err), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        parts = []
        for e in err.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        return _error(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = _HTTP_CODES.get(err.status_code, f"http_{err.status_code}")
        return _error(err.status_code, code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal failure ({type(err).__name__}); see the service log")

    for module in (health, studies, worklist, admin):
        app.include_router(module.router)

    app.mount("/viewer", StaticFiles(directory=STATIC_DIR, html=True), name="viewer")

    @app.get("/", include_in_schema=False)
    def _root():
        return RedirectResponse("/viewer/")

    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    return app
