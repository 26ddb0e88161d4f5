"""`gateway sla report`: recompute SLA compliance offline from an events file (JSON lines)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import typer

from gateway.canonical.errors import ConfigError
from gateway.config import MAPPINGS
from gateway.sla import render
from gateway.sla.engine import SlaReport
from gateway.sla.events import Event, EventLineError, parse_event_lines
from gateway.sla.legs import Leg

sla_app = typer.Typer(help="Domain SLA reports", no_args_is_help=True)
SPLIT_EVENTS_ABOVE = 16 * 2**20  # bytes; below this a second process costs more than it saves
SPLIT_LEGS_ABOVE = 100_000
# Work is handed to the second process in parts, so an early stop (a bad line in the first half) cancels
# what has not started and waits for one part only; parts also keep each pickled result small.
_PARSE_PART = 8 * 2**20  # bytes of the events file
_RENDER_PART = 25_000  # legs
_new = tuple.__new__


def _second_process(**options: Any) -> ProcessPoolExecutor | None:
    """A pool of one worker forked from this process, or None where there is no second core or no fork."""
    if (os.cpu_count() or 1) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    # The forked worker flushes its copies of the standard streams when it exits: nothing may be pending.
    sys.stdout.flush()
    sys.stderr.flush()
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"), **options)


def _lines(f: BinaryIO, limit: int) -> Iterator[bytes]:
    """The lines of `f` from where it is, `limit` bytes of them (the range ends at a line boundary)."""
    consumed = 0
    while consumed < limit:
        line = f.readline()
        if not line:
            return
        consumed += len(line)
        yield line


def _count_lines(f: BinaryIO, limit: int) -> int:
    count, left = 0, limit
    while left:
        chunk = f.read(min(left, 2**22))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count


def _line_starts(path: Path, start: int, stop: int, step: int) -> list[int]:
    """Offsets from `start` to `stop` (both line starts) about `step` bytes apart, each the start of a line."""
    starts = [start]
    with path.open("rb") as f:
        while starts[-1] + step < stop:
            f.seek(starts[-1] + step)
            f.readline()
            starts.append(min(f.tell(), stop))
    if starts[-1] != stop:
        starts.append(stop)
    return starts


def _parse_part(path: Path, start: int, stop: int) -> bytes:
    """In the second process: bytes [start, stop) of the events file, line numbers counted from `start`.

    Returned pickled, to be unpickled when read: the executor would unpickle each part on arrival, in a
    thread, scattering short-lived tuples among the first half's events (measured: a few MiB more peak RSS).
    """
    with path.open("rb") as f:
        f.seek(start)
        # Plain tuples: an Event would be unpickled through its Python-level __new__, one call per event.
        events = [tuple(e) for e in parse_event_lines(_lines(f, stop - start))]
    return pickle.dumps(events, protocol=pickle.HIGHEST_PROTOCOL)


def read_events(path: Path, *, split_above: int = SPLIT_EVENTS_ABOVE) -> Iterator[Event]:
    """The events of a JSON-lines file; a bad line raises EventLineError naming its number.

    Parsing is most of a report's time, so on a file of `split_above` bytes or more a second process parses
    the second half while this one parses the first (and the engine consumes it).
    """
    size = path.stat().st_size
    pool = _second_process() if size >= split_above else None
    if pool is None:
        with path.open("rb") as f:
            yield from parse_event_lines(f)
        return
    try:
        with path.open("rb") as f:
            f.seek(size // 2)
            f.readline()
            middle = f.tell()
        starts = _line_starts(path, middle, size, _PARSE_PART)
        parts: deque[tuple[int, Future[bytes]]] = deque(
            (start, pool.submit(_parse_part, path, start, stop)) for start, stop in zip(starts, starts[1:]))
        with path.open("rb") as f:
            yield from parse_event_lines(_lines(f, middle))
        while parts:
            start, part = parts.popleft()  # dropped once read: each part's result is held once, briefly
            try:
                values = pickle.loads(part.result())
            except EventLineError as exc:
                with path.open("rb") as f:
                    raise EventLineError(_count_lines(f, start) + exc.line_no, exc.reason) from None
            except Exception as exc:
                raise RuntimeError(f"the parsing process failed: {exc!r}") from exc
            for v in values:
                yield _new(Event, v)
    finally:
        # A bad line in the first half, or the consumer stopped: the parts not started never will.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class _RenderJob:
    legs: Sequence[Leg]
    format: str
    into: str  # the file the second process appends its parts to


_job: _RenderJob | None = None  # in write_report's second process only: set as it is forked, so never pickled


def _adopt(job: _RenderJob) -> None:
    global _job
    _job = job


def _render(legs: Sequence[Leg], format: str, start: int, stop: int) -> Iterator[bytes]:
    if format == "json":
        return render.iter_legs_json(legs, start=start, stop=stop)
    return (text.encode() for text in render.iter_legs_csv(legs, start=start, stop=stop))


def _render_part(start: int, stop: int) -> None:
    """In the second process: legs [start, stop) appended to the job's file (one worker: parts stay in order)."""
    assert _job is not None
    with open(_job.into, "ab") as f:
        if start and _job.format == "json":
            f.write(b",")  # JSON objects of legs are comma-separated; a part at 0 has none before it
        f.writelines(_render(_job.legs, _job.format, start, stop))


def write_report(report: SlaReport, out: BinaryIO, *, format: str = "json",
                 split_legs_above: int = SPLIT_LEGS_ABOVE) -> None:
    """The report as JSON (BRIEF 5) or the legs as CSV (UTF-8).

    Rendering is a quarter of a large report's time and needs only the legs: with `split_legs_above` legs or
    more a forked second process renders the second half into a temporary file meanwhile, and this process
    appends it after the first.
    """
    if format == "json":
        head = render.json_head(as_of=report.as_of)
        tail = render.json_tail(summary=report.summary, kpi=report.kpi)
    else:
        head, tail = render.csv_head().encode(), b""
    legs = len(report.legs)
    out.write(head)
    if legs < split_legs_above:
        out.writelines(_render(report.legs, format, 0, legs))
        out.write(tail)
        return
    out.flush()  # nothing buffered may be written twice by the forked process's exit
    with tempfile.NamedTemporaryFile(prefix="sla-legs-") as second:
        pool = _second_process(initializer=_adopt, initargs=(_RenderJob(report.legs, format, second.name),))
        half = legs // 2 if pool is not None else legs
        try:
            parts = [pool.submit(_render_part, start, min(start + _RENDER_PART, legs))
                     for start in range(half, legs, _RENDER_PART)] if pool is not None else []
            out.writelines(_render(report.legs, format, 0, half))
            for part in parts:
                try:
                    part.result()
                except Exception as exc:
                    raise RuntimeError("the rendering process failed") from exc
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)  # after a failure here: no part left to start
        shutil.copyfileobj(second, out, 2**20)
    out.write(tail)


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
    split_events_above: int = typer.Option(SPLIT_EVENTS_ABOVE, "--split-events-above", hidden=True,
                                           help="bytes: an events file this large is parsed in two processes"),
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
            result = compute_report(events=read_events(events, split_above=split_events_above),
                                    policy=config.policy, calendar=config.calendar, kinds=config.kinds, as_of=when)
        except EventLineError as exc:
            _fail(f"{events}: {exc}")
        sys.stdout.flush()
        write_report(result, sys.stdout.buffer, format=format.value)
        sys.stdout.buffer.flush()
    finally:
        if was_enabled:
            gc.enable()
