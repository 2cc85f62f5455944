"""Work on many boards at once: one thread and one progress bar per board, a summary at the end.

One board failing never stops the others; its row in the summary says what went wrong and what
to do. The batch CSV format (`provision --batch SITE.csv`) is parsed here too.
"""

from __future__ import annotations

import csv
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from host_tools.field.errors import BatchFileError, FieldError

T = TypeVar("T")
MAX_PARALLEL = 16  # USB hubs and laptops cope with this many CDC/UART devices talking at once


class _BytesColumn(ProgressColumn):
    """Bytes written, for stages that write bytes (flash, deploy); blank for the others."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        if task.total is not None and task.total > 1:
            return self._bytes.render(task)
        return Text("")


class Reporter:
    """A board's line in the progress display."""

    def __init__(self, progress: Progress | None, task: TaskID | None, port: str) -> None:
        self._progress, self._task, self.port = progress, task, port
        self.stage_text = ""

    def stage(self, text: str) -> None:
        self.stage_text = text
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=f"{self.port}  {text}")

    def bytes(self, done: int, total: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=max(total, 1))

    def done(self, ok: bool) -> None:
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[self._task]
            total = task.total or 1
            self._progress.update(
                self._task,
                completed=total if ok else task.completed,
                description=f"{self.port}  {'[green]done' if ok else '[red]failed'}",
            )


@dataclass(frozen=True)
class Job(Generic[T]):
    port: str
    spec: T


@dataclass(frozen=True)
class Outcome:
    port: str
    ok: bool
    summary: str  # one line: what was done, or the error
    hint: str | None
    result: Any


def run_parallel(
    jobs: Sequence[Job[T]],
    work: Callable[[Job[T], Reporter], tuple[str, Any]],
    console: Console | None = None,
    max_workers: int = MAX_PARALLEL,
) -> list[Outcome]:
    """Run `work` on every job in its own thread. `work` returns (summary, result) or raises."""
    ports = [j.port for j in jobs]
    if len(set(ports)) != len(ports):
        dup = sorted({p for p in ports if ports.count(p) > 1})
        raise BatchFileError(f"the same port appears twice: {', '.join(dup)}")
    console = console or Console(stderr=True)
    outcomes: dict[str, Outcome] = {}
    lock = threading.Lock()
    progress = Progress(
        TextColumn("{task.description}", style="bold"),
        BarColumn(),
        _BytesColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not jobs,
    )

    def one(job: Job[T], rep: Reporter) -> None:
        try:
            summary, result = work(job, rep)
            outcome = Outcome(job.port, True, summary, None, result)
        except FieldError as exc:
            outcome = Outcome(job.port, False, str(exc), exc.hint or None, None)
        except Exception as exc:  # noqa: BLE001 -- one board must not stop the others
            outcome = Outcome(
                job.port, False, f"{type(exc).__name__}: {exc}", "Run again with -v.", None
            )
        rep.done(outcome.ok)
        with lock:
            outcomes[job.port] = outcome

    with progress:
        reporters = [
            Reporter(progress, progress.add_task(f"{j.port}  waiting", total=1), j.port)
            for j in jobs
        ]
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as pool:
            for f in [pool.submit(one, j, r) for j, r in zip(jobs, reporters, strict=True)]:
                f.result()
    return [outcomes[j.port] for j in jobs]


def summary_table(title: str, outcomes: Sequence[Outcome]) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("port")
    table.add_column("result")
    table.add_column("details")
    table.add_column("what to do")
    for o in outcomes:
        table.add_row(  # Text: a message or hint quoting [brackets] is not markup
            Text(o.port),
            Text.from_markup("[green]ok" if o.ok else "[red]FAILED"),
            Text(o.summary),
            Text("" if o.ok else (o.hint or "")),
        )
    return table


# --- the site CSV --------------------------------------------------------------------------

REQUIRED_COLUMNS = ("port", "kind", "site", "lat", "lon")
OPTIONAL_COLUMNS = ("name", "board", "elev_m", "ssid")


@dataclass(frozen=True)
class BatchRow:
    line: int
    port: str
    kind: str
    site: str
    lat: float
    lon: float
    name: str | None
    board: str | None
    elev_m: float | None
    ssid: str | None


def _number(value: str, column: str, line: int, path: Path) -> float:
    try:
        x = float(value)
    except ValueError:
        raise BatchFileError(f"{path}:{line}: {column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise BatchFileError(f"{path}:{line}: {column} {value!r} is not a finite number")
    return x


def read_batch_csv(path: Path) -> list[BatchRow]:
    """Rows of a site CSV. Errors name the file, the line and the column."""
    if not path.is_file():
        raise BatchFileError(f"batch file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise BatchFileError(
                f"{path}: missing column(s) {', '.join(missing)} in the header line"
            )
        unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if unknown:
            raise BatchFileError(f"{path}: unknown column(s) {', '.join(unknown)}")
        rows: list[BatchRow] = []
        for n, raw in enumerate(reader, start=2):
            rec = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            if not any(rec.values()) or rec.get("port", "").startswith("#"):
                continue
            for c in REQUIRED_COLUMNS:
                if not rec.get(c):
                    raise BatchFileError(f"{path}:{n}: column {c} is empty")
            rows.append(
                BatchRow(
                    line=n,
                    port=rec["port"],
                    kind=rec["kind"],
                    site=rec["site"],
                    lat=_number(rec["lat"], "lat", n, path),
                    lon=_number(rec["lon"], "lon", n, path),
                    name=rec.get("name") or None,
                    board=rec.get("board") or None,
                    elev_m=_number(rec["elev_m"], "elev_m", n, path) if rec.get("elev_m") else None,
                    ssid=rec.get("ssid") or None,
                )
            )
    if not rows:
        raise BatchFileError(f"{path} lists no boards")
    return rows
