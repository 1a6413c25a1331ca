"""One progress bar for every long job: rich, transient, on stderr (stdout stays clean for --json)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


def stderr_is_terminal() -> bool:
    """Whether rich would draw live output on stderr (a terminal, or FORCE_TERMINAL set)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


@contextlib.contextmanager
def progress_bar(enabled: bool, label: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A transient bar labelled ``label`` counting to ``total`` (None: unknown); yields ``advance(n=1)``.

    With ``enabled`` False, or stderr not a terminal (a log, a pipe: a transient bar would only leave
    blank lines before the next message), nothing is drawn and ``advance`` does nothing.
    """
    if not enabled or not stderr_is_terminal():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextlib.contextmanager
def status_line(enabled: bool, label: str) -> Iterator[Callable[[str], None]]:
    """A transient spinner on stderr for a job whose steps have no count; yields ``update(text)``."""
    if not enabled or not stderr_is_terminal():
        yield lambda text: None
        return
    from rich.console import Console

    with Console(stderr=True).status(label) as status:
        yield lambda text: status.update(f"{label}: {text}")
