"""Progress drawn on a terminal for the command-line tools, the benchmarks and `make dev`: a bar with its ETA for a
step whose size is known, a line with the time it has taken so far for a step whose size is not. Each is drawn
while its step runs and cleared when the next begins (what is done is for the tools' own output to say).

Quiet when stderr is not a terminal, or under CI=true: logs and CI output get no bars.

tqdm draws the bars. It is installed with the development tools, not in any Lambda layer, and imported only when
something is drawn: a Lambda function never gets here (``recloop.core.progress``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO


def shown(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether progress is drawn on `stream`: a terminal, outside CI."""
    return stream.isatty() and environ.get("CI", "").strip().lower() not in ("true", "1")


def write_line(message: str, stream: TextIO | None = None) -> None:
    """Print a line to `stream` (stderr by default). A bar drawn there is redrawn below the line, not cut into."""
    stream = sys.stderr if stream is None else stream
    tqdm = sys.modules.get("tqdm")  # not loaded: nothing can be drawn, a plain print is enough
    if tqdm is None:
        print(message, file=stream, flush=True)
    else:
        tqdm.tqdm.write(message, file=stream)
        stream.flush()


class TerminalProgress:
    """A ``recloop.core.progress.Progress`` that draws on a terminal; use it as a context manager (or ``close`` it)
    so the last step's line is cleared."""

    def __init__(
        self,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        prefix: str = "",
        *,
        redraw_seconds: float = 0.1,
        tick_seconds: float = 1.0,
    ):
        """`redraw_seconds`: a bar is redrawn at most this often; `tick_seconds`: a step of unknown length shows
        its time so far, refreshed this often."""
        self.stream = sys.stderr if stream is None else stream
        self.enabled = shown(self.stream, os.environ if environ is None else environ)
        self.prefix = prefix
        self.redraw_seconds, self.tick_seconds = redraw_seconds, tick_seconds
        self._bar: Any = None  # tqdm, once something is drawn
        self._step: str | None = None
        self._lock = threading.Lock()
        self._stop_ticking = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, step: str, done: int = 0, total: int | None = None) -> None:
        if not self.enabled:
            return
        with self._lock:
            restarted = self._bar is not None and total is not None and done < self._bar.n
            if step != self._step or restarted or (total is not None and self._bar.total != total):
                self._begin(step, total)
            if total is not None:
                self._bar.update(done - self._bar.n)

    def _begin(self, step: str, total: int | None) -> None:
        from tqdm import tqdm

        self._clear()
        description = f"{self.prefix}{step}"
        drawing = {"file": self.stream, "leave": False, "mininterval": self.redraw_seconds}
        if total is None:
            self._bar = tqdm(desc=description, bar_format="{desc} ... {elapsed}", **drawing)
            self._tick()
        else:
            self._bar = tqdm(desc=description, total=total, dynamic_ncols=True, **drawing)
        self._step = step

    def _tick(self) -> None:
        """Refresh an open step of unknown length every `tick_seconds`: tqdm redraws only when told."""
        if self._ticker is not None:
            return

        def refresh() -> None:
            while not self._stop_ticking.wait(self.tick_seconds):
                with self._lock:
                    if self._bar is not None and self._bar.total is None:
                        self._bar.refresh()

        self._ticker = threading.Thread(target=refresh, name="progress-ticker", daemon=True)
        self._ticker.start()

    def _clear(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._step = None, None

    def close(self) -> None:
        with self._lock:
            self._clear()
        self._stop_ticking.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        self._stop_ticking.clear()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
