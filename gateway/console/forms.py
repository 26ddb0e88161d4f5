"""The console's forms read and checked, each error said in the page's language next to its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from gateway.audit.query import MAX_REASON, InvalidAuditQuery, decode_cursor
from gateway.console.i18n import ALMATY, Language

EXCHANGE_FIELDS = ("case_id", "iin", "peer", "kind", "result", "status_code", "since", "until")
MAX_ID = 128


@dataclass
class Form:
    """What was typed (kept, to show again) and what it means, or the errors per field."""

    typed: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def local_time(text: str) -> datetime:
    """A time as a person types it: `datetime-local` (Almaty wall time) or RFC 3339 with an offset; years
    1970-2199 (ValueError otherwise: year 1 would overflow on conversion)."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if not 1970 <= value.year <= 2199:
        raise ValueError(f"year {value.year} is out of range")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ALMATY)
    return value.astimezone(timezone.utc)


def as_local_input(value: datetime) -> str:
    """The value of a `datetime-local` input for an instant: Almaty wall time, to the minute."""
    return value.astimezone(ALMATY).strftime("%Y-%m-%dT%H:%M")


def _times(form: Form, lang: Language, names: tuple[str, ...]) -> None:
    for name in names:
        text = form.typed.get(name, "").strip()
        if not text:
            continue
        try:
            form.values[name] = local_time(text)
        except ValueError:
            form.errors[name] = lang.gettext("Enter a date and time, for example 2026-03-02 09:15.")
    since, until = form.values.get(names[0]), form.values.get(names[-1])
    if since is not None and until is not None and since > until and len(names) > 1:
        form.errors[names[-1]] = lang.gettext("The end of the period is before its start.")


def _id(form: Form, lang: Language, name: str) -> None:
    text = form.typed.get(name, "").strip()
    if not text:
        return
    if len(text) > MAX_ID or not text.isprintable():
        form.errors[name] = lang.gettext("An identifier is at most 128 printable characters.")
    else:
        form.values[name] = text


def exchange_filters(data: Mapping[str, str], lang: Language, *, iin_allowed: bool) -> Form:
    """The log browser's filters; an IIN only from a posted form (never a URL)."""
    form = Form({k: data.get(k, "") for k in EXCHANGE_FIELDS if data.get(k)})
    _id(form, lang, "case_id")
    iin = form.typed.get("iin", "").strip()
    if iin:
        if not iin_allowed:
            form.typed.pop("iin")
            form.errors["iin"] = lang.gettext("Search by IIN with the form: an IIN is never put in a link.")
        elif len(iin) != 12 or not iin.isascii() or not iin.isdigit():
            form.errors["iin"] = lang.gettext("An IIN is 12 digits.")
        else:
            form.values["iin"] = iin
    for name in ("peer", "kind", "result"):
        text = form.typed.get(name, "").strip()
        if text:
            form.values[name] = text
    code = form.typed.get("status_code", "").strip()
    if code:
        if not code.isdigit() or not 100 <= int(code) <= 599:
            form.errors["status_code"] = lang.gettext("An HTTP status is a number from 100 to 599.")
        else:
            form.values["status_code"] = int(code)
    _times(form, lang, ("since", "until"))
    cursor = data.get("cursor", "").strip()
    if cursor:
        try:
            decode_cursor(cursor)
            form.values["cursor"] = cursor
        except InvalidAuditQuery:
            form.errors["cursor"] = lang.gettext("This page link is not valid; start the search again.")
    return form


def reason_of(data: Mapping[str, str], lang: Language) -> Form:
    form = Form({"reason": data.get("reason", "")})
    reason = form.typed["reason"].strip()
    if not reason:
        form.errors["reason"] = lang.gettext("Give a reason: reading personal data is logged with it.")
    elif len(reason) > MAX_REASON:
        form.errors["reason"] = lang.gettext("A reason is at most 500 characters.")
    else:
        form.values["reason"] = reason
    return form


def sla_filters(data: Mapping[str, str], lang: Language, *, now: datetime) -> Form:
    form = Form({k: data.get(k, "") for k in ("as_of", "since", "until", "rule", "counterpart", "region")
                 if data.get(k)})
    _times(form, lang, ("as_of",))
    _times(form, lang, ("since", "until"))
    # Without an explicit as_of, the current minute: views within a minute share one computed report.
    form.values.setdefault("as_of", now.replace(second=0, microsecond=0))
    for name in ("rule", "counterpart", "region"):
        text = form.typed.get(name, "").strip()
        if text:
            form.values[name] = text
    return form


def export_form(data: Mapping[str, str], lang: Language) -> Form:
    form = Form({k: data.get(k, "") for k in ("case_id", "since", "until", "format", "reason") if data.get(k)})
    _id(form, lang, "case_id")
    _times(form, lang, ("since", "until"))
    fmt = form.typed.get("format", "events")
    if fmt not in ("events", "csv", "chain"):
        form.errors["format"] = lang.gettext("Choose one of the formats.")
    elif fmt == "chain" and any(k in form.values for k in ("case_id", "since", "until")):
        form.errors["format"] = lang.gettext("A chain file is always the whole log: a part of a hash chain cannot "
                                             "be verified alone. Choose events or CSV for a case or a period.")
    form.values["format"] = fmt
    reason = reason_of(data, lang)
    form.errors.update(reason.errors)
    form.values.update(reason.values)
    return form
