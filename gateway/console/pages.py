"""Console pages: sign-in, language, and the auditor's workspace; each validates, calls a service, renders."""

from __future__ import annotations

import hmac
import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from gateway.audit.cases import case_view
from gateway.audit.query import EXPORTS, IIN_LIKE, ExchangeQueries, ExportScope, export_stream
from gateway.bootstrap import Container
from gateway.canonical.errors import NotFound
from gateway.console.forms import Form, as_local_input, exchange_filters, export_form, reason_of, sla_filters
from gateway.console.i18n import LANGUAGES
from gateway.console.sessions import SignInRefused, SignInThrottled
from gateway.console.web import (
    PRE_CSRF_COOKIE,
    PREFIX,
    Console,
    CsrfRefused,
    Page,
    local_path,
    page_for,
    pretty_text,
)
from gateway.sla.legs import STATUSES
from gateway.sla.live import live_report

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PAGE_SIZE = 50
KINDS = ("received", "reply", "derived", "attempt", "refused", "read", "lookup", "document", "admin",
         "audit-read", "audit-search", "audit-export")
RESULTS = ("accepted", "delivered", "retry", "dead", "refused", "served", "duplicate", "parked")


def _console(request: Request) -> Console:
    return request.app.state.console


def _container(request: Request) -> Container:
    return request.app.state.container


Anyone = Annotated[Page, page_for()]
Signed = Annotated[Page, page_for("admin", "auditor")]
Auditor = Annotated[Page, page_for("auditor")]


def _queries(c: Container) -> ExchangeQueries:
    return ExchangeQueries(store=c.store, exchange_log=c.exchange_log, mappings=c.mappings, clock=c.clock,
                           keys=c.keys)


# ---- sign-in, sign-out, language, home ---------------------------------------------------------------


@router.get("/")
async def home(page: Signed) -> Response:
    return page.render("home.html")


@router.get("/sign-in")
async def sign_in_form(page: Anyone, next: str | None = None, signed_out: str | None = None) -> Response:
    if page.session is not None and not signed_out:
        return RedirectResponse(local_path(next), status_code=303)
    notice = page.lang.gettext("You are signed out.") if signed_out else None
    return _sign_in(page, next=local_path(next), status=200, notice=notice)


def _sign_in(page: Page, *, next: str, status: int, error: str | None = None, notice: str | None = None
             ) -> Response:
    csrf = page.console.pre_csrf(page.request)
    response = page.render("sign_in.html", status=status, csrf=csrf, next=next, error=error, notice=notice)
    page.console.set_pre_csrf(response, csrf)
    return response


@router.post("/sign-in")
async def sign_in(page: Anyone) -> Response:
    data = {k: v for k, v in (await page.request.form()).items() if isinstance(v, str)}
    next_path = local_path(data.get("next"))
    cookie_csrf = page.request.cookies.get(PRE_CSRF_COOKIE) or ""
    source = page.request.client.host if page.request.client else "unknown"
    try:
        if not cookie_csrf or not hmac.compare_digest(cookie_csrf.encode(), data.get("csrf", "").encode()):
            # Counted with the failed sign-ins: an anonymous flood of bad forms is bounded the same way.
            await page.console.sessions.refused(source=source, path=page.request.url.path, reason="csrf-refused")
            raise CsrfRefused("the sign-in form was not sent from this console")
        cookie, _ = await page.console.sessions.sign_in(token=data.get("token", ""), source=source,
                                                         path=page.request.url.path)
    except SignInThrottled as exc:
        response = _sign_in(page, next=next_path, status=429, error=page.lang.gettext(
            "Too many failed sign-ins from your address. Wait a few minutes and try again."))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    except SignInRefused:
        return _sign_in(page, next=next_path, status=401, error=page.lang.gettext(
            "The token is not valid for the console. Check that it was copied whole and that it belongs to an "
            "administrator or an auditor."))
    if page.session is not None:  # signing in over a session ends it on the server too
        await page.console.sessions.sign_out(page.session)
    response = RedirectResponse(next_path, status_code=303)
    page.console.set_session_cookie(response, cookie)
    return response


@router.post("/sign-out")
async def sign_out(page: Signed) -> Response:
    await page.form()
    assert page.session is not None
    await page.console.sessions.sign_out(page.session)
    response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", status_code=303)
    page.console.clear_session_cookie(response)
    return response


@router.get("/language/{code}")
async def language(code: str, request: Request, next: str | None = None) -> Response:
    if code not in LANGUAGES:
        raise NotFound(f"no console language {code}")
    response = RedirectResponse(local_path(next), status_code=303)
    response.set_cookie("gw_lang", code, max_age=365 * 86400, path=PREFIX, httponly=True, samesite="strict",
                        secure=_console(request).secure_cookies)
    return response


# ---- exchange log ------------------------------------------------------------------------------------


async def _exchanges(page: Page, data: dict[str, str], *, posted: bool) -> Response:
    c = _container(page.request)
    form = exchange_filters(data, page.lang, iin_allowed=posted)
    found = None
    if form.ok:
        found = await _queries(c).list_exchanges(principal=page.session.principal, limit=PAGE_SIZE,
                                                 newest_first=True, **form.values)
    peers = sorted({i.name for i in c.mappings.counterparts.instances} |
                   {i.counterpart for i in c.mappings.counterparts.instances})
    return page.render("exchanges.html", status=200 if form.ok else 422, form=form, found=found, peers=peers,
                       kinds=KINDS, results=RESULTS, csrf=page.session.csrf)


@router.get("/audit/exchanges")
async def exchanges(page: Auditor) -> Response:
    return await _exchanges(page, dict(page.request.query_params), posted=False)


@router.post("/audit/exchanges")
async def exchanges_search(page: Auditor) -> Response:
    return await _exchanges(page, await page.form(), posted=True)


@router.get("/audit/exchanges/{seq}")
async def exchange_reason(seq: int, page: Auditor) -> Response:
    return page.render("exchange_reason.html", seq=seq, form=reason_of({}, page.lang), csrf=page.session.csrf,
                       fresh=True)


@router.post("/audit/exchanges/{seq}")
async def exchange_detail(seq: int, page: Auditor) -> Response:
    form = reason_of(await page.form(), page.lang)
    if not form.ok:
        return page.render("exchange_reason.html", status=422, seq=seq, form=form, csrf=page.session.csrf,
                           fresh=False)
    c = _container(page.request)
    detail = await _queries(c).exchange_detail(seq=seq, principal=page.session.principal,
                                               reason=form.values["reason"])
    return page.render("exchange_detail.html", d=detail, request_text=_pretty(detail.request),
                       response_text=_pretty(detail.response))


def _pretty(raw: Any) -> str | None:
    """Wire bytes as a person reads them (see `pretty_text`); base64 as it is."""
    if not raw.kept or raw.content is None:
        return None
    return pretty_text(raw.content) if raw.encoding == "utf-8" else raw.content


# ---- case view ---------------------------------------------------------------------------------------


@router.get("/audit/cases")
async def case_lookup(page: Auditor) -> Response:
    return page.render("case_lookup.html", case_id="", error=None, csrf=page.session.csrf)


@router.post("/audit/cases")
async def case_lookup_posted(page: Auditor) -> Response:
    """The case number is posted: what a person types never lands in a URL unless it is a case number."""
    case_id = (await page.form()).get("case_id", "").strip()
    error = None
    if not case_id:
        error = page.lang.gettext("Enter a case number.")
    elif IIN_LIKE.fullmatch(case_id):
        error = page.lang.gettext("This looks like an IIN: find a person's cases by searching the exchange log "
                                  "by IIN.")
        case_id = ""
    if error:
        return page.render("case_lookup.html", status=422, case_id=case_id, error=error, csrf=page.session.csrf)
    return RedirectResponse(f"{PREFIX}/audit/cases/{quote(case_id, safe='')}", status_code=303)


@router.get("/audit/cases/{case_id}")
async def case(case_id: str, page: Auditor) -> Response:
    c = _container(page.request)
    try:
        view = await case_view(store=c.store, config=c.sla, case_id=case_id, as_of=c.clock())
    except NotFound:
        return page.render("case_lookup.html", status=404, case_id=case_id, csrf=page.session.csrf,
                           error=page.lang.gettext("No case %(case)s is known to the gateway.", case=case_id))
    return page.render("case.html", v=view)


# ---- SLA dashboard -----------------------------------------------------------------------------------


async def _report(page: Page) -> tuple[Any, Any]:
    c = _container(page.request)
    form = sla_filters(dict(page.request.query_params), page.lang, now=c.clock())
    if not form.ok:
        return form, None
    report = await live_report(store=c.store, config=c.sla, **form.values)
    return form, report


@router.get("/audit/sla")
async def sla(page: Auditor) -> Response:
    form, report = await _report(page)
    c = _container(page.request)
    # The summary and KPIs as the report holds them; of the legs only the breaches shown are formatted.
    data = None if report is None else {"as_of": report.as_of_text, "summary": report.summary, "kpi": report.kpi,
                                        "legs": report.legs}
    breaches = report.legs_where(("breached", "overdue"), limit=200) if report is not None else []
    return page.render("sla.html", status=200 if form.ok else 422, form=form, r=data, breaches=breaches,
                       statuses=STATUSES, rules=list(c.sla.policy.rules), as_local_input=as_local_input,
                       csv_query=str(page.request.url.query))


@router.get("/audit/sla.csv")
async def sla_csv(page: Auditor) -> Response:
    form, report = await _report(page)
    if report is None:
        return await sla(page)
    return StreamingResponse(iter(list(report.iter_csv())), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="sla-legs.csv"'})


# ---- integrity ---------------------------------------------------------------------------------------


@router.get("/audit/integrity")
async def integrity(page: Auditor) -> Response:
    c = _container(page.request)
    return page.render("integrity.html", job=page.console.jobs.latest(),
                       checkpoints=await _queries(c).checkpoints(limit=20), csrf=page.session.csrf)


@router.post("/audit/integrity")
async def integrity_start(page: Auditor) -> Response:
    await page.form()
    job = await page.console.jobs.start(started_by=page.session.principal.client_id)
    return RedirectResponse(f"{PREFIX}/audit/integrity?job={job.id}", status_code=303)


@router.get("/audit/integrity/jobs/{job_id}")
async def integrity_job(job_id: str, page: Auditor) -> Response:
    job = page.console.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no verification job {job_id}")
    problem = job.report.problem if job.report is not None else None
    return JSONResponse({"state": job.state, "done": job.done, "total": job.total,
                         "percent": round(job.fraction * 100, 1),
                         "problem": None if problem is None else {"seq": problem.seq, "kind": problem.kind}})


# ---- evidence export ---------------------------------------------------------------------------------


@router.get("/audit/export")
async def export_page(page: Auditor, case_id: str | None = None) -> Response:
    return page.render("export.html", form=Form({"case_id": case_id} if case_id else {}), csrf=page.session.csrf)


@router.post("/audit/export")
async def export(page: Auditor) -> Response:
    form = export_form(await page.form(), page.lang)
    if not form.ok:
        return page.render("export.html", status=422, form=form, csrf=page.session.csrf)
    c = _container(page.request)
    scope = ExportScope(case_id=form.values.get("case_id"), since=form.values.get("since"),
                        until=form.values.get("until"))
    fmt = form.values["format"]
    body = export_stream(format=fmt, store=c.store, scope=scope)
    await _queries(c).record_export(principal=page.session.principal, format=fmt, reason=form.values["reason"],
                                    scope=scope, reason_required=True)
    media_type, filename = EXPORTS[fmt]
    if scope.case_id:
        filename = f"{_safe(scope.case_id)}-{filename}"
    return StreamingResponse(body, media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:64]
