"""Progress on a terminal (recloop.tools.progress): drawn on a terminal, quiet under CI=true or off a terminal; and
the domain's side of it (recloop.core.progress)."""

from __future__ import annotations

import io
import re
import time

import pytest

from recloop.core.progress import no_progress, within
from recloop.tools.progress import TerminalProgress, shown, write_line


class FakeTerminal(io.StringIO):
    """What a terminal looks like to a program: a stream whose isatty() is true."""

    def isatty(self) -> bool:
        return True


def drive(progress: TerminalProgress) -> None:
    """A step of unknown length, then a counted one, as training reports them."""
    with progress:
        progress("fitting the ranker")
        for done in range(1, 101):
            progress("ranker's training rows", done, 100)


def screen_lines(output: str) -> list[str]:
    """What each redraw showed: the text between carriage returns and newlines, blanks dropped."""
    return [part.strip() for part in re.split(r"[\r\n]", output) if part.strip()]


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_quiet_under_ci_even_on_a_terminal(ci: str) -> None:
    terminal = FakeTerminal()
    progress = TerminalProgress(terminal, {"CI": ci}, redraw_seconds=0)
    assert not progress.enabled
    drive(progress)
    assert terminal.getvalue() == ""


def test_quiet_when_stderr_is_not_a_terminal() -> None:
    redirected = io.StringIO()
    progress = TerminalProgress(redirected, {}, redraw_seconds=0)
    assert not progress.enabled
    drive(progress)
    assert redirected.getvalue() == ""


def test_shown_on_a_terminal_outside_ci() -> None:
    assert shown(FakeTerminal(), {})
    assert shown(FakeTerminal(), {"CI": "false"})
    assert not shown(FakeTerminal(), {"CI": "true"})
    assert not shown(io.StringIO(), {})


def test_a_counted_step_draws_a_bar_with_its_eta_and_a_step_of_unknown_length_its_time() -> None:
    terminal = FakeTerminal()
    progress = TerminalProgress(terminal, {}, prefix="[x] ", redraw_seconds=0)
    assert progress.enabled
    drive(progress)
    lines = screen_lines(terminal.getvalue())
    assert "[x] fitting the ranker ... 00:00" in lines
    bars = [line for line in lines if line.startswith("[x] ranker's training rows:")]
    assert any(" 50/100 [" in bar for bar in bars), bars
    # tqdm's [elapsed<remaining]: the remaining time is the ETA.
    assert all(re.search(r"\[\d\d:\d\d<(\d\d:\d\d|\?)", bar) for bar in bars), bars
    assert bars[-1].startswith("[x] ranker's training rows: 100%")
    # Closed: the last line is cleared (spaces over it, the cursor back at its start), nothing is left drawn.
    assert terminal.getvalue().endswith("\r")
    assert screen_lines(terminal.getvalue().rsplit("\r", 2)[-2]) == []


def test_a_bar_restarts_when_its_step_starts_over() -> None:
    terminal = FakeTerminal()
    with TerminalProgress(terminal, {}, redraw_seconds=0) as progress:
        progress("MF sweeps", 15, 15)
        progress("MF sweeps", 1, 15)  # the next model's sweeps
    assert "MF sweeps:   7%" in terminal.getvalue()


def test_a_step_of_unknown_length_keeps_showing_its_time() -> None:
    terminal = FakeTerminal()
    with TerminalProgress(terminal, {}, redraw_seconds=0, tick_seconds=0.02) as progress:
        progress("sam deploy")
        time.sleep(0.3)
    redraws = [line for line in screen_lines(terminal.getvalue()) if line.startswith("sam deploy ...")]
    assert len(redraws) >= 5


def test_a_line_written_under_a_bar_leaves_the_bar_whole() -> None:
    terminal = FakeTerminal()
    with TerminalProgress(terminal, {}, redraw_seconds=0) as progress:
        progress("sending events", 1, 4)
        write_line("[recloop] sam build: 41.0 s", terminal)
        progress("sending events", 2, 4)
    output = terminal.getvalue()
    # The bar is cleared to the line's start before the log line, which stands on a line of its own.
    assert "\r[recloop] sam build: 41.0 s\n" in output
    assert "sending events:  50%" in output.split("sam build: 41.0 s\n")[1]


def test_steps_within_a_part_are_named_after_it() -> None:
    seen: list[tuple[str, int, int | None]] = []
    report = within(within(lambda step, done=0, total=None: seen.append((step, done, total)), "demo models"), "mf")
    report("MF sweeps", 3, 15)
    report("drift reference")
    assert seen == [("demo models: mf: MF sweeps", 3, 15), ("demo models: mf: drift reference", 0, None)]
    assert no_progress("anything", 1, 2) is None
