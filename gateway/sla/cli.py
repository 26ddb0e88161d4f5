"""`gateway sla report`: recompute SLA compliance offline from an events file (JSON lines)."""

from __future__ import annotations

import gc
import os
import pickle
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import typer

from gateway.canonical.errors import ConfigError
from gateway.config import MAPPINGS
from gateway.sla import render
from gateway.sla.engine import SlaReport
from gateway.sla.events import Event, EventLineError

sla_app = typer.Typer(help="Domain SLA reports", no_args_is_help=True)
_SPLIT_ABOVE = 16 * 2**20  # bytes; below this a second process costs more than it saves
_SPLIT_LEGS_ABOVE = 100_000


def _lines(f: BinaryIO, limit: int) -> Iterator[bytes]:
    """The lines of `f` up to byte `limit` (a line boundary)."""
    consumed = 0
    for line in f:
        consumed += len(line)
        yield line
        if consumed >= limit:
            return


def _count_lines(f: BinaryIO, limit: int) -> int:
    count, left = 0, limit
    while left:
        chunk = f.read(min(left, 2**22))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


def write_report(report: SlaReport, out: BinaryIO, *, format: str = "json") -> None:
    """The report as JSON (BRIEF 5) or the legs as CSV (UTF-8).

    Rendering is a quarter of a large report's time and needs only the legs: with many legs a forked child
    renders the second half into a temporary file meanwhile, and this process appends it after the first.
    """
    if format == "json":
        head = render.json_head(as_of=report.as_of)
        tail = render.json_tail(summary=report.summary, kpi=report.kpi)
        sep = b","

        def part(start: int, stop: int) -> Iterator[bytes]:
            return render.iter_legs_json(report.legs, start=start, stop=stop)
    else:
        head, tail, sep = render.csv_head().encode(), b"", b""

        def part(start: int, stop: int) -> Iterator[bytes]:
            return (text.encode() for text in render.iter_legs_csv(report.legs, start=start, stop=stop))
    legs = len(report.legs)
    out.write(head)
    if legs < _SPLIT_LEGS_ABOVE or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        out.writelines(part(0, legs))
        out.write(tail)
        return
    half = legs // 2
    with tempfile.TemporaryFile() as second:
        out.flush()  # nothing buffered may be written twice by the child's exit
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                second.writelines(part(half, legs))
                second.flush()
            except BaseException:  # noqa: BLE001 (the parent sees the exit code)
                code = 1
            os._exit(code)
        try:
            out.writelines(part(0, half))
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("the rendering process failed")
        if half and sep:
            out.write(sep)
        second.seek(0)
        shutil.copyfileobj(second, out, 2**20)
    out.write(tail)


def read_events(path: Path) -> Iterator[Event]:
    """The events of a JSON-lines file; a bad line raises EventLineError naming its number.

    Parsing is most of a report's time, so on a large file a forked child parses the second half while this
    process parses the first (and the engine consumes it); the child's events come back pickled as tuples.
    """
    from gateway.sla.events import parse_event_lines

    size = path.stat().st_size
    if size < _SPLIT_ABOVE or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        with path.open("rb") as f:
            yield from parse_event_lines(f)
        return
    with path.open("rb") as f:
        f.seek(size // 2)
        f.readline()
        middle = f.tell()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: parse [middle, end), send ("ok", tuples) or ("error", message), exit at once
        os.close(read_end)
        try:
            with path.open("rb") as f:
                first_line = _count_lines(f, middle) + 1
                f.seek(middle)
                payload: tuple[str, object] = ("ok", [tuple(e) for e in parse_event_lines(f, first_line=first_line)])
        except EventLineError as exc:
            payload = ("error", (exc.line_no, exc.reason))
        except BaseException as exc:  # noqa: BLE001 (anything else is reported by the parent, not lost)
            payload = ("crash", repr(exc))
        with os.fdopen(write_end, "wb") as out:
            pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
        os._exit(0)
    os.close(write_end)
    waited = False
    try:
        with path.open("rb") as f:
            yield from parse_event_lines(_lines(f, middle))
        with os.fdopen(read_end, "rb") as inp:
            status, data = pickle.load(inp)
        os.waitpid(pid, 0)
        waited = True
        if status == "error":
            raise EventLineError(*data)  # type: ignore[misc]
        if status != "ok":
            raise RuntimeError(f"the parsing process failed: {data}")
        new = tuple.__new__
        for values in data:
            yield new(Event, values)
    finally:
        if not waited:  # a bad line in the first half, or the consumer stopped: end the child we started
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            try:
                os.close(read_end)
            except OSError:
                pass


class ReportFormat(str, Enum):
    json = "json"
    csv = "csv"


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)


@sla_app.command("report")
def report(
    events: Path = typer.Option(..., "--events", exists=True, dir_okay=False, readable=True,
                                help="JSON lines: canonical messages each with received_at"
                                     " (gateway audit export --format events)"),
    as_of: str = typer.Option(..., "--as-of", help="report time, RFC 3339 with an offset (e.g. 2026-03-02T12:00:00Z)"),
    format: ReportFormat = typer.Option(ReportFormat.json, "--format", help="json: the full report; csv: the legs"),
    mappings: Path = typer.Option(MAPPINGS, "--mappings",
                                  help="directory with sla.yaml, calendar-kz.yaml, referral-kinds.yaml"),
) -> None:
    """Pair start and stop events per SLA rule and print legs, summary and KPIs (BRIEF 4, 5)."""
    from gateway.sla.engine import compute_report
    from gateway.sla.policy import load_sla_config

    try:
        when = datetime.fromisoformat(as_of)
    except ValueError:
        _fail(f"--as-of: not an RFC 3339 date-time: {as_of!r}")
    if when.tzinfo is None:
        _fail("--as-of needs an explicit offset (e.g. 2026-03-02T12:00:00+05:00 or Z)")
    try:
        config = load_sla_config(mappings)
    except ConfigError as exc:
        _fail(str(exc))
    # The report builds millions of small tuples and no cycles: the cyclic collector would rescan them all
    # again and again (a third of the run time) for nothing. Restored after, for callers in the same process.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            result = compute_report(events=read_events(events), policy=config.policy, calendar=config.calendar,
                                    kinds=config.kinds, as_of=when)
        except EventLineError as exc:
            _fail(f"{events}: {exc}")
        sys.stdout.flush()
        write_report(result, sys.stdout.buffer, format=format.value)
        sys.stdout.buffer.flush()
    finally:
        if was_enabled:
            gc.enable()
