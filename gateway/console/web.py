"""The console's web plumbing: templates, the request's language and session, CSRF, headers, error pages."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, urlencode, urlsplit

import orjson
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from lxml import etree

from gateway.access import SecurityEvents
from gateway.audit.integrity import VerifyJobs
from gateway.canonical.errors import GatewayError
from gateway.console.i18n import LANGUAGE_NAMES, LANGUAGES, Catalogues, Language
from gateway.console.sessions import ConsoleSession, ConsoleSessions
from gateway.xmlsafe import parse_xml

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
SESSION_COOKIE = "gw_session"
LANGUAGE_COOKIE = "gw_lang"
PRE_CSRF_COOKIE = "gw_csrf"  # the sign-in form's double-submit token (there is no session yet)
# No inline script or style anywhere, nothing from another origin, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class NotSignedIn(Exception):
    """No live session: the page sends the browser to the sign-in form and back."""


class RoleRefused(GatewayError):
    slug = "forbidden"
    status = 403
    title = "The caller's role does not allow this"


class CsrfRefused(GatewayError):
    slug = "csrf-refused"
    status = 403
    title = "The form's security token is missing or wrong"


@dataclass
class Page:
    """What every page handler gets: the request, its language, and the session (None on the sign-in page)."""

    request: Request
    console: "Console"
    lang: Language
    session: ConsoleSession | None

    @property
    def roles(self) -> frozenset[str]:
        return self.session.principal.roles if self.session else frozenset()

    def render(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        return self.console.render(self, template, status=status, **context)

    async def form(self) -> dict[str, str]:
        """The posted form, CSRF-checked against the session: a form without its token changes nothing."""
        data = {k: v for k, v in (await self.request.form()).items() if isinstance(v, str)}
        if self.session is None or not self.session.csrf_matches(data.get("csrf")):
            raise CsrfRefused("the form was not sent from this session's page")
        return data


def pretty_text(text: str) -> str:
    """JSON indented, XML re-indented (parsed by the hardened parser); anything else as it was exchanged."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
        if stripped.startswith("<"):
            return etree.tostring(parse_xml(text.encode()), pretty_print=True, encoding="unicode")
    except Exception:  # noqa: BLE001  (shown as exchanged when it does not parse)
        return text
    return text


def local_path(value: str | None, default: str = PREFIX + "/") -> str:
    """A redirect target inside the console only: never another origin (`//evil`, `https://…`)."""
    if not value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith(PREFIX) or value.startswith("//") or "\\" in value:
        return default
    return value


def page_for(*roles: str) -> Any:
    """A dependency giving the handler its Page: no roles, any visitor; otherwise a session with one of them."""

    async def dependency(request: Request) -> Page:
        return await request.app.state.console.page(request, roles=roles or None)

    return Depends(dependency)


class Console:
    def __init__(self, *, catalogues: Catalogues, sessions: ConsoleSessions, jobs: VerifyJobs,
                 events: SecurityEvents, secure_cookies: bool, session_max_s: float) -> None:
        self.catalogues = catalogues
        self.sessions = sessions
        self.jobs = jobs
        self.events = events
        self.secure_cookies = secure_cookies
        self.session_max_s = session_max_s
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.env.filters["tojson_pretty"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()
        self.env.filters["pretty"] = pretty_text
        self.env.globals["quote"] = lambda v: quote(str(v), safe="")

    def language_of(self, request: Request) -> Language:
        return self.catalogues.language(request.cookies.get(LANGUAGE_COOKIE))

    async def page(self, request: Request, *, roles: Iterable[str] | None) -> Page:
        """The request's Page; `roles` None: no session needed; otherwise a session with one of them."""
        lang = self.language_of(request)
        session = await self.sessions.resolve(request.cookies.get(SESSION_COOKIE))
        page = Page(request, self, lang, session)
        if roles is None:
            return page
        if session is None:
            raise NotSignedIn()
        if not session.principal.has_any(frozenset(roles)):
            raise RoleRefused(f"{session.principal.client_id} may not open this page")
        return page

    def render(self, page: Page, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        lang = page.lang
        body = self.env.get_template(template).render(
            _=lang.gettext, ngettext=lang.ngettext, t=lang, lang=lang.code,
            languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES], session=page.session,
            roles=page.roles, path=page.request.url.path, here=_here(page.request), prefix=PREFIX, **context)
        self.catalogues.note_missing(lang)
        return HTMLResponse(body, status_code=status)

    def set_session_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(SESSION_COOKIE, value, max_age=int(self.session_max_s), path=PREFIX, httponly=True,
                            samesite="strict", secure=self.secure_cookies)

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict",
                               secure=self.secure_cookies)

    def pre_csrf(self, request: Request) -> str:
        return request.cookies.get(PRE_CSRF_COOKIE) or secrets.token_urlsafe(24)

    def set_pre_csrf(self, response: Response, value: str) -> None:
        response.set_cookie(PRE_CSRF_COOKIE, value, path=PREFIX, httponly=True, samesite="strict",
                            secure=self.secure_cookies)

    def to_sign_in(self, request: Request) -> Response:
        target = _here(request) if request.method == "GET" else PREFIX + "/"
        return RedirectResponse(f"{PREFIX}/sign-in?next={quote(target, safe='')}", status_code=303)

    async def error_page(self, request: Request, exc: GatewayError) -> Response:
        """A typed error as a page in the person's language (the API's problem+json, for people)."""
        lang = self.language_of(request)
        try:
            session = await self.sessions.resolve(request.cookies.get(SESSION_COOKIE))
        except Exception:  # noqa: BLE001  (the store may be what failed: the error page needs no session)
            session = None
        if exc.status == 403 and session is not None:
            # As on the API, every refusal of a known person is a security event; anonymous ones are counted
            # with the failed sign-ins (ConsoleSessions.refused), so they cannot grow the log without bound.
            await self.events.refused(client=session.principal.client_id, reason=exc.slug,
                                      method=request.method, path=request.url.path, status=403)
        page = Page(request, self, lang, session)
        response = page.render("error.html", status=exc.status, error_status=exc.status,
                               message=error_message(lang, exc))
        retry_after = getattr(exc, "retry_after_s", None) or getattr(exc, "retry_after", None)
        if retry_after:
            response.headers["Retry-After"] = str(int(retry_after))
        # Also for a 500, which Starlette answers outside the middleware that sets these on every page.
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        return response


def _here(request: Request) -> str:
    """This page's address for links back to it; an IIN typed into a link is never repeated in another."""
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "iin"])
    return request.url.path + (f"?{query}" if query else "")


def error_message(lang: Language, exc: GatewayError) -> str:
    """What a person reads for an error: by its stable slug, in their language."""
    _ = lang.gettext
    messages = {
        "forbidden": _("Your role does not allow this page. Sign in as a person who holds the right role."),
        "csrf-refused": _("The form has expired or was not sent from this console. Open the page again and "
                          "repeat the action."),
        "not-found": _("Nothing was found at this address."),
        "sign-in-throttled": _("Too many failed sign-ins from your address. Wait a few minutes and try again."),
        "sign-in-refused": _("The token is not valid for the console."),
        "reason-required": _("Give a reason: reading personal data is logged with it."),
        "invalid-audit-query": _("The search is not valid. Check the filters."),
    }
    return messages.get(exc.slug, _("The gateway could not do this. Nothing was changed."))


class ConsoleHeaders:
    """Pure ASGI, for everything under /console: the security headers, no caching of pages (they can hold
    personal data; the vendored assets may be cached), and the server time of each response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith(PREFIX)):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        static = path.startswith(STATIC_PATH + "/")

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in _REPLACED]
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                headers.append((b"cache-control", b"max-age=3600" if static else b"no-store"))
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={elapsed_ms:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


STATIC_PATH = PREFIX + "/static"
_REPLACED = {k.lower().encode() for k in SECURITY_HEADERS} | {b"cache-control", b"server-timing"}
