"""The console's languages: gettext catalogues (Babel) for Kazakh and Russian, English as the source."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations

LANGUAGES = ("kk", "ru", "en")  # the state language first, as the header lists them
LANGUAGE_NAMES = {"kk": "Қазақша", "ru": "Русский", "en": "English"}
SOURCE_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "console"
ALMATY = ZoneInfo("Asia/Almaty")
# What a string without a translation shows in strict mode (tests): visible, and easy to find in a page.
MISSING_MARK = "⟦{}⟧"


def load_catalogues(locale_dir: Path = LOCALE_DIR) -> dict[str, NullTranslations]:
    """Every language's catalogue, compiled in memory from its .po file (no build step, nothing fetched)."""
    out: dict[str, NullTranslations] = {SOURCE_LANGUAGE: NullTranslations()}
    for lang in LANGUAGES:
        if lang == SOURCE_LANGUAGE:
            continue
        path = locale_dir / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=lang, domain=DOMAIN)
        buffer = io.BytesIO()
        write_mo(buffer, catalog, use_fuzzy=False)
        buffer.seek(0)
        out[lang] = Translations(buffer, domain=DOMAIN)
    return out


@dataclass
class Language:
    """One request's language: gettext with plural forms, and locale-aware times and numbers."""

    code: str
    translations: NullTranslations
    strict: bool = False
    missing: set[str] = field(default_factory=set)

    def _lookup(self, msgid: str, plural: str | None = None, n: int = 1) -> str:
        if plural is None:
            text = self.translations.gettext(msgid)
        else:
            text = self.translations.ngettext(msgid, plural, n)
        if self.code != SOURCE_LANGUAGE and text in (msgid, plural) and msgid not in _SAME_IN_EVERY_LANGUAGE:
            self.missing.add(msgid)
            if self.strict:
                return MISSING_MARK.format(text)
        return text

    def gettext(self, msgid: str, **values: Any) -> str:
        text = self._lookup(msgid)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        text = self._lookup(singular, plural, n)
        return text % {"num": n, **values}

    def time(self, value: datetime | str | None, *, seconds: bool = True) -> str:
        """A UTC instant shown in Asia/Almaty with its offset (+05:00 since 2024-03-01, +06:00 before)."""
        if value is None or value == "":
            return "—"
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        local = value.astimezone(ALMATY)
        text = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
        offset = local.strftime("%z")
        return f"{text} {offset[:3]}:{offset[3:]}"

    def number(self, value: float | int | None, *, digits: int = 0) -> str:
        if value is None:
            return "—"
        return format_decimal(value, format=f"#,##0.{'0' * digits}" if digits else "#,##0", locale=self.code)

    def percent(self, value: float | None) -> str:
        if value is None:
            return "—"
        return format_percent(value, format="#,##0.0%", locale=self.code)

    def duration(self, seconds: float | None) -> str:
        """Seconds as days, hours and minutes in this language."""
        if seconds is None:
            return "—"
        minutes = int(round(seconds / 60))
        days, rest = divmod(minutes, 24 * 60)
        hours, minutes = divmod(rest, 60)
        parts = []
        if days:
            parts.append(self.ngettext("%(num)d day", "%(num)d days", days))
        if hours:
            parts.append(self.ngettext("%(num)d hour", "%(num)d hours", hours))
        if minutes or not parts:
            parts.append(self.ngettext("%(num)d minute", "%(num)d minutes", minutes))
        return " ".join(parts)

    @property
    def locale(self) -> Locale:
        return Locale.parse(self.code)


# Strings that are the same in every language (codes, names of standards): never "missing".
_SAME_IN_EVERY_LANGUAGE = frozenset({"CSV", "JSON", "XML", "SLA", "KPI", "p50", "p95"})


class Catalogues:
    """The loaded catalogues; `language(code)` gives a request its Language."""

    def __init__(self, *, default: str, strict: bool = False, locale_dir: Path = LOCALE_DIR) -> None:
        if default not in LANGUAGES:
            raise ValueError(f"console language {default!r} is not one of {', '.join(LANGUAGES)}")
        self.default = default
        self.strict = strict
        self._translations = load_catalogues(locale_dir)
        self.missing: set[tuple[str, str]] = set()

    def language(self, code: str | None) -> Language:
        chosen = code if code in LANGUAGES else self.default
        return Language(chosen, self._translations[chosen], strict=self.strict)

    def note_missing(self, language: Language) -> None:
        self.missing.update((language.code, msgid) for msgid in language.missing)
