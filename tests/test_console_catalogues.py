"""The console's gettext catalogues: in step with the sources, complete, and safe to format (no server needed).

When a test here fails because the sources and the catalogues differ, refresh them with:

    .venv/bin/pybabel extract -F gateway/console/babel.cfg -k _ -k gettext -k ngettext:1,2 -k markup \
        --no-location --sort-output --project probation-gateway \
        -o gateway/console/locale/console.pot gateway/console
    .venv/bin/pybabel update -D console -i gateway/console/locale/console.pot \
        -d gateway/console/locale --no-fuzzy-matching

then translate every new (empty) entry in ru/ and kk/ LC_MESSAGES/console.po.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_keywords, parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.support import Translations

from gateway.console import i18n
from gateway.console.i18n import Catalogues, load_catalogues

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "gateway" / "console"
LOCALE = CONSOLE / "locale"
POT = LOCALE / "console.pot"
TRANSLATED = ("ru", "kk")
NPLURALS = {"ru": 3, "kk": 2}
# The keywords the extraction command adds (-k ...) to Babel's defaults.
EXTRA_KEYWORDS = ["_", "gettext", "ngettext:1,2", "markup"]

REFRESH = (
    "Refresh the catalogues, then translate the new entries in ru and kk:\n"
    "  .venv/bin/pybabel extract -F gateway/console/babel.cfg -k _ -k gettext -k ngettext:1,2 -k markup "
    "--no-location --sort-output --project probation-gateway -o gateway/console/locale/console.pot gateway/console\n"
    "  .venv/bin/pybabel update -D console -i gateway/console/locale/console.pot -d gateway/console/locale "
    "--no-fuzzy-matching"
)

# %-placeholders as Python's %-formatting reads them (%% is a literal percent sign, not a placeholder).
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
# Command lines quoted in the sources: they are typed by people and must stay as they are.
COMMANDS = ("gateway audit verify", "gateway sla report --events", "gateway clients add", "gateway clients revoke",
            "gateway keys generate", "gateway mappings check", "--file", "GATEWAY_KEY_PASSPHRASE", "p50 / p95",
            "alerts.yaml")
# Latin abbreviations stay as they are, except the ones with a localized form (the glossary).
ABBREVIATION = re.compile(r"\b([A-Z][A-Z0-9]+)s?\b")
LOCALIZED_ABBREVIATIONS = {"IIN": {"ru": "ИИН", "kk": "ЖСН"}}


def _ids(catalog: Catalog) -> set:
    return {m.id for m in catalog if m.id}


def _show(ids: set) -> str:
    return "\n".join(f"  {i!r}" for i in sorted(ids, key=str))


def _read(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=locale, domain="console")


def _placeholders(text: str) -> set[str]:
    return {m.group(0) for m in PLACEHOLDER.finditer(text) if m.group(0) != "%%"}


@pytest.fixture(scope="module")
def pot() -> Catalog:
    return _read(POT)


@pytest.fixture(scope="module", params=TRANSLATED)
def po(request: pytest.FixtureRequest) -> tuple[str, Catalog]:
    lang = request.param
    return lang, _read(LOCALE / lang / "LC_MESSAGES" / "console.po", locale=lang)


def extracted() -> Catalog:
    """What `pybabel extract` finds in gateway/console, with babel.cfg's method map and the command's keywords."""
    with (CONSOLE / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    keywords = {**DEFAULT_KEYWORDS, **parse_keywords(EXTRA_KEYWORDS)}
    catalog = Catalog(project="probation-gateway")
    for _filename, lineno, message, _comments, context in extract_from_dir(
        str(CONSOLE), method_map, options_map, keywords=keywords, strip_comment_tags=True
    ):
        catalog.add(message, None, [], context=context)
    return catalog


def test_template_matches_the_sources(pot: Catalog) -> None:
    in_sources, in_pot = _ids(extracted()), _ids(pot)
    new, gone = in_sources - in_pot, in_pot - in_sources
    problems = []
    if new:
        problems.append(f"{len(new)} msgid(s) in the console sources are not in console.pot:\n{_show(new)}")
    if gone:
        problems.append(f"{len(gone)} msgid(s) in console.pot are no longer in the console sources:\n{_show(gone)}")
    assert not problems, "\n".join(problems) + "\n" + REFRESH


def test_catalogue_has_exactly_the_template_entries(pot: Catalog, po: tuple[str, Catalog]) -> None:
    lang, catalog = po
    missing, extra = _ids(pot) - _ids(catalog), _ids(catalog) - _ids(pot)
    assert not missing and not extra, (
        f"{lang}/console.po is not updated from console.pot.\n"
        f"Missing:\n{_show(missing)}\nNot in the template:\n{_show(extra)}\n{REFRESH}"
    )


def test_every_entry_is_translated(pot: Catalog, po: tuple[str, Catalog]) -> None:
    lang, catalog = po
    assert catalog.num_plurals == NPLURALS[lang], f"{lang}: Plural-Forms header says {catalog.num_plurals} forms"
    problems = []
    for template in pot:
        if not template.id:
            continue
        message = catalog.get(template.id)
        if message is None:
            problems.append(f"missing: {template.id!r}")
            continue
        if message.fuzzy:
            problems.append(f"fuzzy: {template.id!r}")
        if template.pluralizable:
            forms = message.string if isinstance(message.string, (tuple, list)) else (message.string,)
            if len(forms) != NPLURALS[lang] or not all(f and f.strip() for f in forms):
                problems.append(f"plural forms not all filled ({NPLURALS[lang]} needed): {template.id!r}")
        elif not (isinstance(message.string, str) and message.string.strip()):
            problems.append(f"empty: {template.id!r}")
    assert not problems, f"{lang}/console.po:\n" + "\n".join(problems)


def test_translations_keep_placeholders_commands_and_abbreviations(po: tuple[str, Catalog]) -> None:
    lang, catalog = po
    problems = []
    for message in catalog:
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set().union(*(_placeholders(i) for i in ids))
        for i in ids:
            if _placeholders(i) != wanted:
                problems.append(f"singular and plural msgids differ in placeholders: {ids!r}")
        for form in forms:
            if not form:
                continue
            if _placeholders(form) != wanted:
                problems.append(f"{ids[0]!r}: {form!r} has {sorted(_placeholders(form))}, wants {sorted(wanted)}")
            stray = PLACEHOLDER.sub("", form)
            if "%" in stray:
                problems.append(f"{ids[0]!r}: {form!r} has a '%' that is not a placeholder (write %% for one)")
            if wanted:  # what the console does with it: every value given, nothing else
                values = {name: 1 for name in re.findall(r"%\((\w+)\)", " ".join(ids))}
                try:
                    form % values
                except (KeyError, TypeError, ValueError) as exc:
                    problems.append(f"{ids[0]!r}: {form!r} cannot be formatted: {exc!r}")
            for command in COMMANDS:
                if command in ids[0] and command not in form:
                    problems.append(f"{ids[0]!r}: {form!r} must keep the command {command!r} as it is")
            for abbreviation in set(ABBREVIATION.findall(" ".join(ids))):
                local = LOCALIZED_ABBREVIATIONS.get(abbreviation, {}).get(lang, abbreviation)
                if local not in form:
                    problems.append(f"{ids[0]!r}: {form!r} should write {abbreviation!r} as {local!r}")
    assert not problems, f"{lang}/console.po:\n" + "\n".join(problems)


def test_load_catalogues_compiles_every_language() -> None:
    loaded = load_catalogues()
    assert set(loaded) == set(i18n.LANGUAGES)
    for lang in TRANSLATED:
        assert isinstance(loaded[lang], Translations), lang
    assert loaded["ru"].gettext("Exchange log") == "Журнал обмена"
    assert loaded["kk"].gettext("Exchange log") == "Алмасу журналы"
    assert loaded["en"].gettext("Exchange log") == "Exchange log"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_template_entry_is_found_in_the_compiled_catalogue(pot: Catalog, lang: str) -> None:
    """What the console sees at run time: no msgid falls back to English (strict mode would mark it)."""
    language = Catalogues(default="ru", strict=True).language(lang)
    assert language.code == lang
    for message in pot:
        if not message.id:
            continue
        if isinstance(message.id, tuple):
            for n in (1, 2, 5, 21):
                language.ngettext(message.id[0], message.id[1], n)
        else:
            language._lookup(message.id)
    assert not language.missing, f"{lang}: falls back to English for:\n{_show(language.missing)}"


RECORDS_CHECKED = ("%(num)d record checked", "%(num)d records checked")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "проверена 1 запись"),
        (2, "проверены 2 записи"),
        (5, "проверено 5 записей"),
        (11, "проверено 11 записей"),
        (21, "проверена 21 запись"),
        (22, "проверены 22 записи"),
    ],
)
def test_russian_plural_forms(n: int, expected: str) -> None:
    language = Catalogues(default="ru", strict=True).language("ru")
    assert language.ngettext(*RECORDS_CHECKED, n) == expected
    assert not language.missing


@pytest.mark.parametrize(("n", "expected"), [(1, "1 жазба тексерілді"), (2, "2 жазба тексерілді"),
                                              (5, "5 жазба тексерілді"), (21, "21 жазба тексерілді")])
def test_kazakh_plural_forms(n: int, expected: str) -> None:
    language = Catalogues(default="ru", strict=True).language("kk")
    assert language.ngettext(*RECORDS_CHECKED, n) == expected
    assert not language.missing


def test_russian_durations_use_the_right_forms() -> None:
    language = Catalogues(default="ru").language("ru")
    assert language.duration((1 * 24 * 60 + 2 * 60 + 5) * 60) == "1 день 2 часа 5 минут"
    assert language.duration((21 * 24 * 60 + 21 * 60 + 21) * 60) == "21 день 21 час 21 минута"
