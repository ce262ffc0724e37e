"""Swagger UI at ``/docs``, served from this gateway alone.

FastAPI's own ``/docs`` loads Swagger UI from a CDN and starts it with an inline script:
blank without internet access, and against the Content-Security-Policy the gateway sends
(``gateway.security``: scripts from this origin only, none inline). Here the assets come
from the installed ``fastapi-offline`` package and the start-up code is a small script of
this origin.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/docs/assets"


def install_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """``/docs``, ``/docs/init.js`` and the Swagger UI assets under ``/docs/assets``."""
    page = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(app.title)} - API docs</title>
  <link rel="icon" href="{ASSETS_URL}/favicon.png">
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_URL}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
    init = f"""// Starts Swagger UI (a file of its own: the CSP allows no inline script).
window.ui = SwaggerUIBundle({{
  url: {json.dumps(openapi_url)},
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}});
"""

    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.api_route("/docs/init.js", methods=["GET", "HEAD"], include_in_schema=False)
    async def docs_init() -> Response:
        return Response(init, media_type="text/javascript")

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
