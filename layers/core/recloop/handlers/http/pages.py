"""GET /api/v1/dashboard and /redoc: static pages whose scripts and styles are inlined from `static/`, so a browser
loads nothing from another host; the dashboard's scripts then read this API's JSON routes with relative URLs.

Each page is assembled once per Lambda instance. Its Content-Security-Policy admits exactly the inlined scripts (by
their SHA-256) and lets the page connect to its own origin only.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router

from recloop.handlers.http.resolver import documented

router = Router()

STATIC = Path(__file__).parent / "static"
# The only ways the pages refer to a file of static/ (each replaced by the file's text).
_ASSET = re.compile(r'<script src="(?P<script>[\w./-]+)"></script>|<link rel="stylesheet" href="(?P<style>[\w./-]+)">')
_COMMON_POLICY = "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
# ReDoc builds its styles at run time (styled-components) and its search index in a blob: worker.
_EXTRA_POLICY = {
    "dashboard": "style-src {styles}; frame-ancestors 'none'",
    "redoc": "style-src 'unsafe-inline'; worker-src blob:; font-src data:; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class Page:
    html: str
    content_security_policy: str

    def response(self) -> Response:
        return Response(
            status_code=200,
            content_type="text/html; charset=utf-8",
            body=self.html,
            headers={
                "Content-Security-Policy": self.content_security_policy,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page(name: str) -> Page:
    """static/<name>.html with every script and stylesheet it names inlined."""
    scripts: list[str] = []
    styles: list[str] = []

    def inline(match: re.Match[str]) -> str:
        relative = match["script"] or match["style"]
        text = (STATIC / relative).read_text(encoding="utf-8")
        closing = "</script" if match["script"] else "</style"
        if closing in text.lower():  # it would end the element early; never rewrite minified code to avoid it
            raise ValueError(f"{relative} contains {closing!r} and cannot be inlined")
        if match["script"]:
            scripts.append(text)
            return f"<script>{text}</script>"
        styles.append(text)
        return f"<style>{text}</style>"

    html = _ASSET.sub(inline, (STATIC / f"{name}.html").read_text(encoding="utf-8"))
    script_src = " ".join(_sha256(s) for s in scripts)
    extra = _EXTRA_POLICY[name].format(styles=" ".join(_sha256(s) for s in styles))
    return Page(html=html, content_security_policy=f"{_COMMON_POLICY}; script-src {script_src}; {extra}")


HTML_PAGE = {200: {"description": "an HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}


@router.get(
    "/api/v1/dashboard",
    summary="The RecLoop dashboard: traffic, online learning, champion, experiments, drift and retraining",
    description="One HTML page whose scripts poll the JSON routes (relative URLs). Where the stack checks "
    "credentials, the page asks for an API key and an operator token and keeps them in the browser tab only.",
    tags=["operations"],
    responses={**documented(public=True), **HTML_PAGE},
)
def dashboard() -> Any:  # a Response: an HTML page
    return page("dashboard").response()


@router.get(
    "/redoc",
    summary="ReDoc over the OpenAPI document of /docs",
    tags=["operations"],
    responses={**documented(public=True), **HTML_PAGE},
)
def redoc() -> Any:  # a Response: an HTML page
    return page("redoc").response()
