"""`vaekit serve`'s web application: the explorer page and the JSON API (FastAPI).

`make_app(run, token=None, limits=None)` builds the ASGI app around a `Service`
(apps/serving.py, where the model work and the input checks live). Routes:

- `/` the explorer page, `/static/*` its script and style (served from the package: the
  page works offline and loads nothing from elsewhere);
- `/v1/encode`, `/v1/decode`, `/v1/sample`, `/v1/reconstruct`, `/v1/score`,
  `/v1/neighbors`, `/v1/interpolate` (POST, JSON bodies), `/v1/info`, `/v1/map`,
  `/v1/examples/{index}` (GET): the API, behind a bearer token when one is set;
- `/healthz`, and the OpenAPI schema at `/docs` (and `/openapi.json`).

Every error is answered as JSON `{"error": "one line"}` naming the field: 400 malformed
JSON, 401 missing or wrong token, 404/405 unknown route or method, 413 body too large, 415
not JSON, 422 a value the service refuses (shape, NaN, non-numeric, over a limit, unknown
field). Requests that break vaekit itself get a 500 with the same shape, and the server
keeps serving.

This module imports FastAPI: only `vaekit serve` imports it (the serve extra).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from vaekit.apps.serving import MAX_BODY_BYTES, SCORE_SAMPLES, Limits, Service
from vaekit.core.errors import VaekitError
from vaekit.core.version import VERSION

STATIC = Path(__file__).parent / "static"
# the page may load only what this server serves (and images it makes as data: URLs)
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
)
BODY_METHODS = {"POST", "PUT", "PATCH"}
log = logging.getLogger("vaekit.serve")
Format = Literal["list", "png"]
BEARER = HTTPBearer(auto_error=False, description="needed when the server has a token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


# --- request bodies ---------------------------------------------------------------------
class Body(BaseModel):
    """Strict JSON: no unknown fields, no numbers as strings, no booleans as numbers."""

    model_config = ConfigDict(extra="forbid", strict=True)


X_HELP = "examples as nested lists: (N, *shape) or flat rows (N, prod(shape))"
PNG_HELP = "examples as base64 PNG strings (or data: URLs) of the model's size"


class Examples(Body):
    x: list[Any] | None = Field(None, description=X_HELP)
    png: list[Any] | None = Field(None, description=PNG_HELP)


class ReconstructBody(Examples):
    format: Format = "list"


class ScoreBody(Examples):
    samples: int = Field(SCORE_SAMPLES, description="posterior samples per example")


class NeighborsBody(Examples):
    z: list[Any] | None = Field(None, description="latent codes (N, latent_dim) instead of x")
    k: int = Field(5, description="neighbours per input")


class DecodeBody(Body):
    z: list[Any] = Field(description="latent codes (N, latent_dim)")
    format: Format = "list"


class SampleBody(Body):
    n: int = Field(16, description="draws from the prior")
    seed: int | None = Field(None, description="seed of the draws (random if absent)")
    format: Format = "list"


class InterpolateBody(Body):
    z_a: list[Any] = Field(description="the first code (latent_dim,)")
    z_b: list[Any] = Field(description="the last code (latent_dim,)")
    steps: int = Field(10, description="codes on the path, both ends included")
    method: Literal["lerp", "slerp"] = "lerp"
    format: Format = "list"


# --- errors as one-line JSON ------------------------------------------------------------
def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status, headers=headers)


def field_name(location: tuple[Any, ...]) -> str:
    """('body', 'z', 0, 1) -> 'z[0][1]'; the body itself is 'body'."""
    parts = [str(p) for p in location if p not in ("body", "query", "path")]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


async def validation_error(request: Request, err: Exception) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return error(400, f"body: not valid JSON ({reason})")
    kind = first.get("type", "")
    message = "unknown field" if kind == "extra_forbidden" else first.get("msg", "invalid")
    if kind == "missing":
        message = "required field missing"
    return error(422, f"{field_name(tuple(first.get('loc', ())))}: {message}")


async def http_error(request: Request, err: HTTPException) -> JSONResponse:
    message = err.detail if isinstance(err.detail, str) else str(err.detail)
    if err.status_code == 404:
        message = f"no such route: {request.url.path}"
    elif err.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif err.status_code == 400 and "parsing the body" in message:  # FastAPI's own words
        message = "body: could not be read as JSON (nested too deeply?)"
    return error(err.status_code, message, getattr(err, "headers", None))


async def vaekit_error(request: Request, err: VaekitError) -> JSONResponse:
    return error(422, str(err))


async def recursion_error(request: Request, err: RecursionError) -> JSONResponse:
    return error(400, "body: JSON nested too deeply")


async def internal_error(request: Request, err: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error(500, f"internal error ({type(err).__name__}); the server keeps running")


# --- body size, content type and Host, before any route reads the request ---------------
class RequestGuard:
    """ASGI middleware: bodies over `max_body` bytes get 413 (before they are read in full),
    bodies that are not JSON 415; with `hosts`, another Host header gets 400 (a page on
    another site reaching a loopback server by DNS rebinding)."""

    def __init__(self, app, max_body: int = MAX_BODY_BYTES, hosts: list[str] | None = None):
        self.app, self.max_body, self.hosts = app, max_body, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refuse(scope, headers)
        if refusal is None and scope["method"] in BODY_METHODS:
            body, refusal = await self.read_body(receive, headers)
            if refusal is None:
                receive = replay(body, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refuse(self, scope, headers: dict[str, str]) -> Response | None:
        if self.hosts is not None:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.hosts and host not in self.hosts:
                return error(400, f"Host {host!r} is not served here (use {self.hosts[0]})")
        if scope["method"] in BODY_METHODS:
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return error(415, "body: send JSON with Content-Type: application/json")
            length = headers.get("content-length")
            if length is not None and not length.isdigit():
                return error(400, "Content-Length: not a number")
            if length is not None and int(length) > self.max_body:
                return self.too_large()
        return None

    def too_large(self) -> Response:
        return error(413, f"body: more than the limit of {self.max_body:,} bytes")

    async def read_body(self, receive, headers) -> tuple[bytes, Response | None]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", error(400, "body: the client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", self.too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def replay(body: bytes, receive):
    """A receive callable that gives `body` once, then waits on the real one (disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


# --- the app ----------------------------------------------------------------------------
def make_app(
    run: str | Path | Service,
    token: str | None = None,
    limits: Limits | None = None,
    *,
    device: str = "cpu",
    hosts: list[str] | None = None,
) -> FastAPI:
    """The explorer and the JSON API for a run folder (or a Service already opened).

    `token`: every /v1 route needs `Authorization: Bearer TOKEN`. `hosts`: the Host
    headers accepted (None: any)."""
    owned = not isinstance(run, Service)  # opened here: closed when the app stops
    service = Service(run, device=device, limits=limits) if owned else run
    limits = service.limits

    def authorised(credentials: Credentials) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token (send Authorization: Bearer TOKEN)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            service.close()

    app = FastAPI(
        title="vaekit serve",
        version=VERSION,
        description=f"The run {service.run.path}: encode, decode, sample, reconstruct, "
        "score and search a trained VAE. Errors are {'error': 'one line'}.",
        docs_url=None,  # Swagger UI would load from a CDN: /docs serves the schema itself
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(VaekitError, vaekit_error)
    app.add_exception_handler(RecursionError, recursion_error)
    app.add_exception_handler(Exception, internal_error)
    app.add_middleware(RequestGuard, max_body=limits.body_bytes, hosts=hosts)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    add_pages(app, service)
    app.include_router(api_routes(service), dependencies=[Depends(authorised)])
    return app


def add_pages(app: FastAPI, service: Service) -> None:
    """The explorer page, /healthz and /docs (no token: they hold no data)."""

    @app.get("/", include_in_schema=False)
    def explorer() -> Response:
        page = (STATIC / "explorer.html").read_text()
        headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
        return Response(page, media_type="text/html", headers=headers)

    @app.get("/healthz", summary="200 while the model worker runs")
    def healthz() -> JSONResponse:
        if not service.batcher.thread.is_alive():
            return error(503, "the model worker has stopped")
        return JSONResponse({"status": "ok", "run": service.run.name})

    @app.get("/docs", include_in_schema=False)
    def docs() -> JSONResponse:
        return JSONResponse(app.openapi())


def reply(result: dict[str, Any]) -> Response:
    """JSON without FastAPI's per-element encoder (large lists of floats)."""
    return Response(json.dumps(result, allow_nan=False), media_type="application/json")


def api_routes(service: Service) -> APIRouter:
    """The /v1 routes: each a thin call into the service."""
    api = APIRouter(prefix="/v1", tags=["v1"])

    @api.get("/info", summary="the run: model, data, dimensions ranked by KL, metrics, limits")
    def info() -> Response:
        return reply(service.info())

    @api.get("/map", summary="the 2-D map of the test set and its projection")
    def latent_map() -> Response:
        return reply(service.latent_map())

    @api.get("/examples/{index}", summary="one test example, its label and posterior mean")
    def example(index: int, format: Format = "png") -> Response:
        return reply(service.example(index, format))

    @api.post("/encode", summary="posterior means and log-variances (and map points)")
    def encode(body: Examples) -> Response:
        return reply(service.encode(body.x, body.png))

    @api.post("/decode", summary="E[x | z] of each code")
    def decode(body: DecodeBody) -> Response:
        return reply(service.decode(body.z, body.format))

    @api.post("/sample", summary="draws from the prior, decoded")
    def sample(body: SampleBody) -> Response:
        return reply(service.sample(body.n, body.seed, body.format))

    @api.post("/reconstruct", summary="examples decoded from their posterior means")
    def reconstruct(body: ReconstructBody) -> Response:
        return reply(service.reconstruct(body.x, body.png, body.format))

    @api.post("/score", summary="anomaly score per example, nats (higher = more unusual)")
    def score(body: ScoreBody) -> Response:
        return reply(service.score(body.x, body.png, body.samples))

    @api.post("/neighbors", summary="nearest test examples in latent space")
    def neighbors(body: NeighborsBody) -> Response:
        return reply(service.neighbors(body.x, body.png, body.z, body.k))

    @api.post("/interpolate", summary="decoded codes on the path between two codes")
    def interpolate(body: InterpolateBody) -> Response:
        return reply(service.interpolate(body.z_a, body.z_b, body.steps, body.method, body.format))

    return api
