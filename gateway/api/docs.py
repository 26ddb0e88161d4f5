"""The API documentation pages (Swagger UI, ReDoc) served from vendored assets, with nothing from another origin."""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
STATIC_DIR = Path(__file__).parent / "static"
# Scripts, styles, images and the OpenAPI document from this origin only; what each UI needs beyond that
# (checked in Chromium, tests/browser) is added per page.
_CSP = ("default-src 'self'; script-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SWAGGER_HEADERS = {**_HEADERS, "Content-Security-Policy": f"{_CSP}; style-src 'self'"}
# ReDoc's styled-components inject <style> elements and its search index runs in a blob: worker.
REDOC_HEADERS = {**_HEADERS, "Content-Security-Policy": f"{_CSP}; style-src 'self' 'unsafe-inline'; "
                                                        "worker-src 'self' blob:"}

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """The pages and their assets; the app is built with docs_url=None and redoc_url=None."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="docs-assets")


def _urls(request: Request) -> tuple[str, str, str]:
    """The root path (behind a proxy's prefix), the assets and the OpenAPI document, all on this origin."""
    root = request.scope.get("root_path", "").rstrip("/")
    return root, f"{root}{ASSETS_PATH}", f"{root}{request.app.openapi_url}"


def _page(title: str, head: str, body: str, headers: dict[str, str]) -> HTMLResponse:
    return HTMLResponse(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n",
        headers=headers)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root, assets, openapi = _urls(request)
    return _page(
        f"{request.app.title} - Swagger UI",
        f'<link rel="stylesheet" href="{escape(assets)}/swagger-ui/swagger-ui.css">\n'
        f'<link rel="icon" type="image/png" href="{escape(assets)}/swagger-ui/favicon-32x32.png">\n',
        f'<div id="swagger-ui" data-openapi-url="{escape(openapi)}" '
        f'data-oauth2-redirect-url="{escape(root)}/docs/oauth2-redirect"></div>\n'
        f'<script src="{escape(assets)}/swagger-ui/swagger-ui-bundle.js"></script>\n'
        f'<script src="{escape(assets)}/swagger-init.js"></script>\n', SWAGGER_HEADERS)


@router.get("/docs/oauth2-redirect")
async def swagger_ui_oauth2_redirect(request: Request) -> HTMLResponse:
    _, assets, _ = _urls(request)
    return _page("Swagger UI: OAuth2 redirect", "",
                 f'<script src="{escape(assets)}/swagger-ui/oauth2-redirect.js"></script>\n', SWAGGER_HEADERS)


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    _, assets, openapi = _urls(request)
    return _page(
        f"{request.app.title} - ReDoc",
        f'<link rel="stylesheet" href="{escape(assets)}/docs.css">\n'
        # No icon of its own: an empty one keeps the browser from asking /favicon.ico, which needs credentials.
        '<link rel="icon" href="data:,">\n',
        '<noscript>ReDoc needs JavaScript to show the API documentation.</noscript>\n'
        f'<div id="redoc" data-openapi-url="{escape(openapi)}"></div>\n'
        f'<script src="{escape(assets)}/redoc/redoc.standalone.js"></script>\n'
        f'<script src="{escape(assets)}/redoc-init.js"></script>\n', REDOC_HEADERS)
