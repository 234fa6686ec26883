"""Static pages: watch, studio and moderation consoles (the reference client)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def _page(name: str):  # type: ignore[no-untyped-def]
    async def page(request: Request) -> Response:
        return FileResponse(STATIC / name, headers={"cache-control": "no-cache"})

    return page


async def _index(request: Request) -> Response:
    return RedirectResponse("/studio")


def routes() -> list[BaseRoute]:
    return [
        Route("/", _index),
        Route("/watch/{session}", _page("watch.html")),
        Route("/studio", _page("studio.html")),
        Route("/moderate/{session}", _page("moderate.html")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
