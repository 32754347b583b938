"""The inspector's HTTP app (FastAPI): the page, its static files and a JSON API over a
``Store``. Only GET routes: nothing a request does changes a file.

    GET /                     the page (mmsr/inspect/static/index.html)
    GET /static/{name}        its JavaScript and CSS (a fixed list of files)
    GET /api/runs             the served runs and training folders
    GET /api/list             one run's rows, filtered and paged, with counts and metrics
    GET /api/trajectory       one line in full (``trajectory_view``)
    GET /api/side             the same question in several runs
    GET /api/compare          questions of several runs, those where they disagree, paged
    GET /api/training         a training folder's steps and metrics
    GET /api/groups           a step's samples grouped by prompt, paged
    GET /api/image            an image of a run

A loopback inspector answers only requests addressed to a loopback host name, so a web page
elsewhere cannot read the runs through DNS rebinding; the page is served with a content
security policy that allows no script but its own.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mmsr.inspect.rows import (
    Disagree,
    Filters,
    Tools,
    compare,
    counts,
    facets,
    groups,
    list_row,
)
from mmsr.inspect.store import NotFound, Store
from mmsr.inspect.views import trajectory_view

STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
MAX_PAGE = 500
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def _static(name: str) -> bytes:
    return resources.files("mmsr.inspect").joinpath("static", name).read_bytes()


def _page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    return {"total": len(items), "offset": offset, "items": items[offset : offset + limit]}


def create_app(store: Store, *, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app over ``store``; ``allowed_hosts``: the Host names it answers (default: the
    loopback names; ``["*"]``: any)."""
    app = FastAPI(title="mmsr inspect", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.update(_HEADERS)
        return response

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.get("/")
    def index() -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC[name] + "; charset=utf-8")

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        found, trainings = store.discover()
        return {
            "roots": [str(r) for r in store.roots],
            "runs": [store.describe(r) | {"metrics": store.metrics(r)} for r in found.values()],
            "trainings": [
                {"key": t.key, "path": str(t.path), "steps": list(t.steps)}
                for t in trainings.values()
            ],
        }

    @app.get("/api/list")
    def list_rows(
        run: str,
        offset: Offset = 0,
        limit: Limit = 100,
        correct: bool | None = None,
        searched: bool | None = None,
        tools: Tools | None = None,
        category: str | None = None,
        need: str | None = None,
        end_reason: str | None = None,
        reward_min: float | None = None,
        reward_max: float | None = None,
        text: str = "",
        bad: bool = False,
    ) -> dict[str, Any]:
        found = store.run(run)
        rows = store.file(found).rows()
        where = Filters(
            correct, searched, tools, category, need, end_reason, reward_min, reward_max, text, bad
        )
        matched = [r for r in rows if where.match(r)]
        return {
            "run": store.describe(found),
            "metrics": store.metrics(found),
            "counts": counts(rows),
            "matched": counts(matched) if where.active else None,
            "facets": facets(rows),
            **_page([list_row(r) for r in matched], offset, limit),
        }

    def view(run: str, line: int) -> dict[str, Any]:
        record, row = store.record(run, line)
        if record is None:
            return {"row": row, "bad": True}
        return trajectory_view(record, line)

    @app.get("/api/trajectory")
    def trajectory(run: str, line: Annotated[int, Query(ge=1)]) -> dict[str, Any]:
        found = store.run(run)
        return {"run": store.describe(found), "trajectory": view(run, line)}

    @app.get("/api/side")
    def side(run: Annotated[list[str], Query()], id: str) -> dict[str, Any]:
        out = []
        for key in run:
            found = store.run(key)
            line = next((r["line"] for r in store.rows(key) if r["id"] == id and not r["bad"]), 0)
            out.append(
                {"run": store.describe(found), "trajectory": view(key, line) if line else None}
            )
        return {"id": id, "runs": out}

    @app.get("/api/compare")
    def compare_runs(
        run: Annotated[list[str], Query()],
        disagree: Disagree = "correct",
        offset: Offset = 0,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        if len(run) < 2:
            raise HTTPException(400, "compare needs two runs or more")
        found = [store.run(key) for key in run]
        result = compare([store.file(r).rows() for r in found], disagree)
        for item in result["items"]:
            item["cells"] = [list_row(c) for c in item["cells"]]
        page = _page(result.pop("items"), offset, limit)
        runs = [store.describe(r) | {"metrics": store.metrics(r)} for r in found]
        return {"runs": runs, "disagree": disagree, **result, **page}

    @app.get("/api/training")
    def training(key: str) -> dict[str, Any]:
        folder = store.training(key)
        steps = []
        for step_key in folder.steps:
            found = store.run(step_key)
            rows = store.file(found).rows()
            steps.append(store.describe(found) | {"counts": counts(rows)})
        return {"key": key, "path": str(folder.path), "steps": steps,
                "metrics": store.training_metrics(folder)}  # fmt: skip

    @app.get("/api/groups")
    def grouped(run: str, offset: Offset = 0, limit: Limit = 50) -> dict[str, Any]:
        found = store.run(run)
        rows = store.file(found).rows()
        return {"run": store.describe(found), "metrics": store.metrics(found),
                "counts": counts(rows), **_page(groups(rows), offset, limit)}  # fmt: skip

    @app.get("/api/image")
    def image(run: str, name: str) -> FileResponse:
        path, media_type = store.image(run, name)
        return FileResponse(path, media_type=media_type)

    return app
