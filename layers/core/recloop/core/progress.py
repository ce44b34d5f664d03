"""Progress of long work (training, a dataset read from the archive, a replay), reported by the code doing it and
shown, or not, by whoever called it.

The work calls a ``Progress`` with the step it is on: ``progress("fitting the ranker")`` when a step of unknown
length begins, ``progress("replaying realtime", done, total)`` as a counted step advances. Lambda passes nothing
(``no_progress``); the command-line tools pass ``recloop.tools.progress.TerminalProgress``, which draws it on a
terminal and stays quiet elsewhere. So the layer needs nothing to draw progress bars.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, step: str, done: int = 0, total: int | None = None) -> None:
        """`step` is under way: `done` of `total` units, or a step of unknown length when `total` is None."""
        ...


def no_progress(step: str, done: int = 0, total: int | None = None) -> None:
    """Progress told to nobody (a Lambda function's logs are no place for it)."""


def within(progress: Progress, part: str) -> Progress:
    """`progress` with each step named as a step of `part`: ``within(progress, "candidate")("ranker rows", 5, 9)``
    reports "candidate: ranker rows"."""

    def report(step: str, done: int = 0, total: int | None = None) -> None:
        progress(f"{part}: {step}", done, total)

    return report
