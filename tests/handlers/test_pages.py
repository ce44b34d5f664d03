"""The HTML pages of OpsFunction: the dashboard and ReDoc, each one response with its scripts inlined (nothing to
load from another host), a Content-Security-Policy that admits exactly those scripts, and a place in /docs."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from local.inprocess import ApiClient

INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def page(api: ApiClient, path: str) -> tuple[str, dict[str, str]]:
    response = api.respond("ops", "GET", path, headers={"Accept": "text/html"})
    assert response["statusCode"] == 200
    headers = {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()} | (response.get("headers") or {})
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    return response["body"], headers


def policy(headers: dict[str, str]) -> dict[str, set[str]]:
    directives = (d.strip().split() for d in headers["Content-Security-Policy"].split(";"))
    return {d[0]: set(d[1:]) for d in directives if d}


def sha256(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", ["/api/v1/dashboard", "/redoc"])
def test_a_page_loads_nothing_from_anywhere_and_its_policy_admits_only_its_own_scripts(
    api: ApiClient, path: str
) -> None:
    html, headers = page(api, path)
    assert not re.search(r"<script[^>]* src=|<link[^>]* rel=\"stylesheet\"", html)  # every asset inlined
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # no reference to another host
    assert 'src:"http' not in html  # nor an image the bundled code would add (ReDoc's logo: static/vendor/README.md)
    scripts = INLINE_SCRIPT.findall(html)
    directives = policy(headers)
    assert directives["script-src"] == {sha256(s) for s in scripts} and len(scripts) == 2
    assert directives["default-src"] == {"'none'"} and directives["connect-src"] == {"'self'"}


def test_the_dashboard_inlines_uplot_with_its_license_header_and_reads_the_json_routes(api: ApiClient) -> None:
    html, headers = page(api, "/api/v1/dashboard")
    library, dashboard = INLINE_SCRIPT.findall(html)
    assert library.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */") and "uPlot" in library
    for route in ("metrics?history=true", "mlops/online-learning/status", "mlops/models?history=10"):
        assert f'get("{route}")' in dashboard  # relative: under any stage path
    for route in ("mlops/experiments", "mlops/drift", "mlops/retrain/status", "health"):
        assert f'get("{route}")' in dashboard
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert policy(headers)["style-src"] == {sha256(s) for s in styles} and len(styles) == 2
    for section in ("traffic", "online", "models", "experiments", "drift", "retraining"):
        assert f'<section id="{section}">' in html


def test_redoc_inlines_the_standalone_bundle_and_reads_the_document_of_docs(api: ApiClient) -> None:
    html, _ = page(api, "/redoc")
    bundle, start = INLINE_SCRIPT.findall(html)
    assert bundle.startswith("/*! For license information please see redoc.standalone.js.LICENSE.txt */")
    assert 'Redoc.init("docs?format=json"' in start


def test_docs_links_the_dashboard_and_redoc_and_describes_them_as_html(api: ApiClient) -> None:
    status, spec = api.request("ops", "GET", "/docs", query={"format": "json"})
    assert status == 200
    assert "[dashboard](api/v1/dashboard)" in spec["info"]["description"]
    assert "[ReDoc](redoc)" in spec["info"]["description"]
    for path in ("/api/v1/dashboard", "/redoc"):
        success = spec["paths"][path]["get"]["responses"]["200"]
        assert list(success["content"]) == ["text/html"]
