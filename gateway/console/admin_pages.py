"""The administrator's workspace: counterparts (health, edit with a dry run, history, roll back), outbox,
dead letters, keys and clients, mappings."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from gateway.admin import InvalidConfiguration, NotDeadLettered
from gateway.bootstrap import Container
from gateway.canonical.errors import ConfigError, NotFound
from gateway.console.forms import Form, local_time
from gateway.console.i18n import Language
from gateway.console.web import PREFIX, Page, page_for
from gateway.mapping import load_mappings
from gateway.operations import instance_health, keys_view
from gateway.pipeline.retry import reason_class
from gateway.storage import operations as reads
from gateway.storage.operations import DeadLetterFilter
from security.keys import KeyStoreError

router = APIRouter(prefix=PREFIX + "/admin", include_in_schema=False)
# (field, kind): what the edit form shows of an instance, in the order `PATCH /v1/admin/counterparts` takes it.
FIELDS: tuple[tuple[str, str], ...] = (
    ("base_url", "text"), ("regions", "list"), ("role", "role"), ("enabled", "bool"), ("timeout_s", "float"),
    ("max_in_flight", "int"), ("log_bodies", "bool"), ("require_signatures", "bool"), ("mapping_version", "int?"),
    ("retry.max_attempts", "int"), ("retry.base_delay_s", "float"), ("retry.max_delay_s", "float"),
    ("retry.deadline_s", "float"), ("retry.retry_after_max_s", "float"), ("retry.retry_statuses", "ints"),
    ("breaker.failure_threshold", "int"), ("breaker.reset_after_s", "float"), ("keys", "lines"),
    ("revoked_keys", "lines"),
)
BULK_REPLAY_MAX = 1_000  # one action, one transaction: more are replayed by repeating it


Admin = Annotated[Page, page_for("admin")]


def _c(page: Page) -> Container:
    return page.request.app.state.container


# ---- counterparts ------------------------------------------------------------------------------------


@router.get("/counterparts")
async def counterparts(page: Admin) -> Response:
    c = _c(page)
    return page.render("admin_counterparts.html", health=await instance_health(c=c), now=c.clock(),
                       version=c.admin.version)


def _get(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for part in path:
        doc = doc.setdefault(part, {})
    doc[last] = value


def _as_text(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind in ("list", "ints"):
        return ", ".join(str(v) for v in value)
    if kind == "lines":
        return "\n".join(value)
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


def instance_form(current: dict[str, Any]) -> Form:
    return Form({name: _as_text(_get(current, name), kind) for name, kind in FIELDS})


def read_instance_form(data: dict[str, str], current: dict[str, Any], lang: Language) -> tuple[Form, dict[str, Any]]:
    """The posted fields over the instance as it is; a value of the wrong kind is an error next to its field."""
    form = Form({name: data.get(name, "") for name, _ in FIELDS})
    doc: dict[str, Any] = {k: v for k, v in current.items() if k != "version"}  # the config's, not a field
    doc["retry"] = dict(current.get("retry", {}))
    doc["breaker"] = dict(current.get("breaker", {}))
    for name, kind in FIELDS:
        text = form.typed[name].strip()
        try:
            if kind == "int":
                value: Any = int(text)
            elif kind == "int?":
                value = int(text) if text else None
            elif kind == "float":
                value = float(text.replace(",", "."))
            elif kind == "bool":
                value = text == "true"
            elif kind == "list":
                value = [v.strip() for v in text.split(",") if v.strip()]
            elif kind == "ints":
                value = [int(v) for v in text.replace(" ", "").split(",") if v]
            elif kind == "lines":
                value = [v.strip() for v in text.splitlines() if v.strip()]
            else:
                value = text
        except ValueError:
            form.errors[name] = lang.gettext("Enter a number.") if kind != "ints" else lang.gettext(
                "Enter HTTP statuses separated by commas.")
            continue
        _set(doc, name, value)
    return form, doc


def _flat(doc: dict[str, Any] | None) -> dict[str, str]:
    return {name: _as_text(_get(doc or {}, name), kind) for name, kind in FIELDS}


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[tuple[str, str, str]]:
    old, new = _flat(before), _flat(after)
    return [(name, old[name], new[name]) for name, _ in FIELDS if old[name] != new[name]]


def _field_errors(exc: InvalidConfiguration, lang: Language) -> dict[str, str]:
    errors: dict[str, str] = {}
    for e in exc.extra.get("errors", []) or [{"pointer": "/", "detail": exc.detail}]:
        field = e["pointer"].strip("/").replace("/", ".")
        known = next((name for name, _ in FIELDS if field == name or field.startswith(name + ".")), "")
        errors[known or "_"] = lang.gettext("Not accepted: %(detail)s", detail=e["detail"])
    return errors


async def _instance_page(page: Page, name: str, *, form: Form | None = None, status: int = 200,
                         **extra: Any) -> Response:
    c = _c(page)
    try:
        current = c.admin.instance(name)
    except NotFound:
        return page.render("error.html", status=404, error_status=404, message=page.lang.gettext(
            "No counterpart instance %(name)s is configured.", name=name))
    health = next((h for h in await instance_health(c=c) if h.name == name), None)
    return page.render("admin_counterpart.html", status=status, name=name, current=current,
                       form=form or instance_form(current), fields=FIELDS, health=health, now=c.clock(),
                       history=[{**h, "changes": diff(h["change"].get("before"), h["change"].get("after") or {})}
                                for h in await c.admin.history(name=name, limit=50)], csrf=page.session.csrf,
                       **{"dry": None, "changes": None, "notice": None, "checked": None, **extra})


@router.get("/counterparts/{name}")
async def counterpart(name: str, page: Admin, applied: int | None = None) -> Response:
    notice = page.lang.gettext("Version %(version)s applied.", version=applied) if applied else None
    return await _instance_page(page, name, notice=notice)


@router.post("/counterparts/{name}")
async def counterpart_change(name: str, page: Admin) -> Response:
    """`action=dry-run` shows the diff and the sample wire message; `action=apply` applies (all or nothing)."""
    c = _c(page)
    data = await page.form()
    try:
        current = c.admin.instance(name)
    except NotFound:
        return await _instance_page(page, name)
    form, doc = read_instance_form(data, current, page.lang)
    if not form.ok:
        return await _instance_page(page, name, form=form, status=422)
    try:
        dry = await c.admin.put(name=name, document=doc, principal=page.session.principal, dry_run=True)
    except InvalidConfiguration as exc:
        form.errors.update(_field_errors(exc, page.lang))
        return await _instance_page(page, name, form=form, status=422)
    checked = _fingerprint(dry["after"], c.admin.version)
    if data.get("action") == "apply":
        if data.get("checked") == checked:
            result = await c.admin.put(name=name, document=doc, principal=page.session.principal, dry_run=False)
            return RedirectResponse(f"{PREFIX}/admin/counterparts/{quote(name)}?applied={result['version']}",
                                    status_code=303)
        # Apply only what a dry run showed: the form or the configuration changed since (another admin?).
        stale = page.lang.gettext("The form or the configuration changed since the dry run: check this dry run, "
                                  "then apply.")
        return await _instance_page(page, name, form=form, status=409, dry=dry, checked=checked,
                                    changes=diff(dry["before"], dry["after"]), notice=stale)
    return await _instance_page(page, name, form=form, dry=dry, checked=checked,
                                changes=diff(dry["before"], dry["after"]))


def _fingerprint(after: dict[str, Any], version: int | None) -> str:
    """What a dry run showed, against which configuration version: Apply must carry the same."""
    return hashlib.sha256(orjson.dumps({"after": after, "version": version}, option=orjson.OPT_SORT_KEYS)
                          ).hexdigest()


@router.post("/counterparts/{name}/rollback")
async def counterpart_rollback(name: str, page: Admin) -> Response:
    c = _c(page)
    data = await page.form()
    try:
        version = int(data.get("version", ""))
        result = await c.admin.rollback(name=name, version=version, principal=page.session.principal)
    except (ValueError, NotFound, InvalidConfiguration):
        return await _instance_page(page, name, status=422, notice=None, rollback_error=page.lang.gettext(
            "That version cannot be restored for this instance."))
    return RedirectResponse(f"{PREFIX}/admin/counterparts/{quote(name)}?applied={result['version']}",
                            status_code=303)


# ---- outbox and dead letters -------------------------------------------------------------------------


@router.get("/outbox")
async def outbox(page: Admin) -> Response:
    c = _c(page)
    return page.render("admin_outbox.html", health=await instance_health(c=c), now=c.clock(),
                       parked=await reads.parked_deliveries(c.store.engines))


def dead_letter_filter(data: dict[str, str], lang: Language) -> tuple[Form, DeadLetterFilter]:
    form = Form({k: data.get(k, "") for k in ("counterpart", "instance", "reason_class", "since", "until",
                                              "message_type") if data.get(k)})
    values: dict[str, Any] = {}
    for name in ("counterpart", "instance", "reason_class", "message_type"):
        if form.typed.get(name, "").strip():
            values[name] = form.typed[name].strip()
    for name in ("since", "until"):
        if form.typed.get(name, "").strip():
            try:
                values[name] = local_time(form.typed[name])
            except ValueError:
                form.errors[name] = lang.gettext("Enter a date and time, for example 2026-03-02 09:15.")
    return form, DeadLetterFilter(**values)


async def _dead_letters_page(page: Page, data: dict[str, str], *, status: int = 200, notice: str | None = None
                             ) -> Response:
    c = _c(page)
    form, filt = dead_letter_filter(data, page.lang)
    after = int(data["after"]) if data.get("after", "").isdigit() else 0
    items = await reads.dead_letters(c.store.engines, filter=filt, after=after, limit=100) if form.ok else []
    mono = time.monotonic()
    breakers = {i.name: _breaker(c, i.name, mono) for i in c.mappings.counterparts.instances}
    return page.render("admin_dead_letters.html", status=status if form.ok else 422, form=form, items=items,
                       breakers=breakers, reasons=await reads.dead_letter_reasons(c.store.engines, classify=reason_class),
                       instances=[i.name for i in c.mappings.counterparts.instances],
                       counterparts=sorted({i.counterpart for i in c.mappings.counterparts.instances}),
                       csrf=page.session.csrf, notice=notice, next_after=items[-1]["id"] if len(items) == 100
                       else None)


def _breaker(c: Container, name: str, mono: float) -> dict[str, Any]:
    """The breaker as a person needs it before a replay: its state and, when open, when it will close."""
    state = c.worker.breaker.state(name, now=mono)
    closes_at = None
    if state == "open":
        until = c.worker.breaker.open_until(name)
        if until is not None:
            closes_at = c.clock() + timedelta(seconds=max(0.0, until - mono))
    return {"state": state, "closes_at": closes_at}


@router.get("/dead-letters")
async def dead_letters(page: Admin) -> Response:
    return await _dead_letters_page(page, dict(page.request.query_params))


@router.get("/dead-letters/{delivery_id}")
async def dead_letter(delivery_id: int, page: Admin) -> Response:
    c = _c(page)
    try:
        d = await c.admin.dead_letter(delivery_id)
    except NotFound:
        return page.render("error.html", status=404, error_status=404, message=page.lang.gettext(
            "No delivery %(id)s.", id=delivery_id))
    return page.render("admin_dead_letter.html", d=d, breaker=_breaker(c, d["instance"] or "", time.monotonic()),
                       csrf=page.session.csrf)


@router.post("/dead-letters/replay")
async def replay(page: Admin) -> Response:
    """One, the selected, or every dead letter matching the filter: one audited action with the count."""
    c = _c(page)
    data = await page.form()
    form = await page.request.form()
    if data.get("scope") == "matching":
        filt_form, filt = dead_letter_filter(data, page.lang)
        if not filt_form.ok:
            return await _dead_letters_page(page, data, status=422)
        ids = await reads.dead_letter_ids(c.store.engines, filter=filt, limit=BULK_REPLAY_MAX)
    else:
        ids = sorted({int(v) for v in form.getlist("id") if isinstance(v, str) and v.isdigit()})
    if not ids:
        return await _dead_letters_page(page, data, status=422, notice=page.lang.gettext(
            "Nothing was selected to replay."))
    try:
        result = await c.admin.replay_many(delivery_ids=ids, principal=page.session.principal)
    except (NotFound, NotDeadLettered):
        return await _dead_letters_page(page, data, status=409, notice=page.lang.gettext(
            "Some of these deliveries are no longer dead-lettered; nothing was replayed. Reload the list."))
    notice = page.lang.ngettext("%(num)d dead letter queued for replay.", "%(num)d dead letters queued for replay.",
                                result["replayed"])
    return await _dead_letters_page(page, {k: v for k, v in data.items() if k in (
        "counterpart", "instance", "reason_class", "since", "until", "message_type")}, notice=notice)


# ---- keys, clients, mappings -------------------------------------------------------------------------


@router.get("/keys")
async def keys(page: Admin) -> Response:
    c = _c(page)
    return page.render("admin_keys.html", view=await keys_view(c=c), now=c.clock(), csrf=page.session.csrf,
                       has_keystore=c.keys is not None, notice=None)


@router.post("/keys/{action}")
async def key_action(action: str, page: Admin) -> Response:
    """Rotate a channel's key or revoke one; the page asked for confirmation (a checkbox) first."""
    c = _c(page)
    data = await page.form()
    if c.keys is None or action not in ("rotate", "revoke"):
        raise NotFound("no such key action")
    if data.get("confirm") != "yes":
        return page.render("admin_keys.html", status=422, view=await keys_view(c=c), now=c.clock(),
                           csrf=page.session.csrf, has_keystore=True, notice=page.lang.gettext(
                               "Tick the confirmation box: this changes what counterparts must trust."))
    try:
        if action == "rotate":
            channel = data.get("channel", "json")
            if channel not in ("json", "xml"):
                raise ValueError(channel)
            old = c.keys.active_info(channel=channel)  # type: ignore[arg-type]
            # An RSA key for the XML channel takes a moment to make: not on the event loop.
            info = await asyncio.to_thread(c.keys.rotate, channel=channel)  # type: ignore[arg-type]
            what = {"rotated": channel, "new_kid": info.kid,
                    "before": {"active": old.kid if old else None}, "after": {"active": info.kid}}
        else:
            kid = data.get("kid", "")
            before = next((k.to_json() for k in c.keys.list() if k.kid == kid), None)
            if before is None or before.get("revoked_at"):
                raise ValueError(f"no key {kid} that is not revoked already")
            info = c.keys.revoke(kid, reason=f"revoked from the console by {page.session.principal.client_id}")
            what = {"revoked": info.kid, "before": before, "after": info.to_json()}
    except (KeyError, ValueError, LookupError, KeyStoreError) as exc:
        return page.render("admin_keys.html", status=422, view=await keys_view(c=c), now=c.clock(),
                           csrf=page.session.csrf, has_keystore=True,
                           notice=page.lang.gettext("Not done: %(detail)s", detail=str(exc)))
    await c.admin.record_action(principal=page.session.principal, what=what, peer="gateway-keys")
    return RedirectResponse(f"{PREFIX}/admin/keys", status_code=303)


@router.get("/mappings")
async def mappings(page: Admin) -> Response:
    c = _c(page)
    try:
        load_mappings(c.settings.mappings_dir, counterparts_file=c.settings.counterparts_file)
        check: list[str] = []
    except ConfigError as exc:
        check = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return page.render("admin_mappings.html", m=c.mappings, sla=c.sla, check=check,
                       directory=str(c.settings.mappings_dir))

