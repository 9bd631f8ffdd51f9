"""What a transfer shows: on a terminal, rich progress bars (one per file in flight and one
overall); anywhere else (CI logs), one plain line per file with no control characters."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from .client import log_line, printable


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class Reporter:
    """Plain reporter: one line per finished file on ``stream``. Thread-safe."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.lock = threading.Lock()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def begin(self, total_files: int, total_bytes: int) -> None:
        pass

    def start(self, name: str, size: int | None) -> object:
        return name

    def advance(self, handle: object, n: int) -> None:
        pass

    def reset(self, handle: object, completed: int) -> None:
        pass

    def finish(self, handle: object, line: str | None) -> None:
        """The transfer ``handle`` ended; ``line`` says how (None: the caller says it)."""
        if line is not None:
            self.line(line)

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            self.stream.write(log_line(text) + "\n")
            self.stream.flush()


class RichReporter(Reporter):
    """Progress bars on a terminal (rich). Finished files print a line above the bars."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.overall = None

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def begin(self, total_files: int, total_bytes: int) -> None:
        self.overall = self.progress.add_task(
            f"total ({total_files} files)", total=total_bytes or None
        )

    def start(self, name: str, size: int | None) -> object:
        return self.progress.add_task(_short(printable(name)), total=size)

    def advance(self, handle: object, n: int) -> None:
        self.progress.advance(handle, n)
        if self.overall is not None:
            self.progress.advance(self.overall, n)

    def reset(self, handle: object, completed: int) -> None:
        done = self.progress.tasks[[t.id for t in self.progress.tasks].index(handle)].completed
        self.progress.update(handle, completed=completed)
        if self.overall is not None:
            self.progress.advance(self.overall, completed - done)

    def finish(self, handle: object, line: str | None) -> None:
        self.progress.remove_task(handle)
        if line is not None:
            self.progress.console.print(log_line(line), markup=False, highlight=False)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def reporter(*, json_output: bool, progress: str) -> Reporter:
    """Bars on a terminal unless told otherwise; plain lines in CI; nothing but the JSON
    document when --json asks for it (then lines still go to stderr)."""
    tty = sys.stderr.isatty()
    if progress == "bars" or (progress == "auto" and tty and not json_output):
        return RichReporter()
    return Reporter(quiet=progress == "none")
