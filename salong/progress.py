"""The progress display on stderr, one rich live area shared by the whole process.

It is shown only when stderr is a terminal (logs of scripted runs stay free of bar
remnants). Each activity (loading a model, encoding a dataset, training, sampling a song)
is a line `status_bar` opens; nested activities show only the innermost one, and nothing
stays behind once they end.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

CONSOLE = Console(stderr=True)  # stderr of every salong message, bar and status line


class _Counted(ProgressColumn):
    """A column shown only for lines with a known total (a stage without one is a bare pulse)."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> Any:
        return self.column.render(task) if task.total is not None else Text("")


class _Live:
    """The process's one live display and its stack of lines (only the top one visible)."""

    progress: Progress | None = None
    stack: list[TaskID] = []

    @classmethod
    def open(cls, description: str, total: int | None) -> TaskID:
        if cls.progress is None:
            cls.progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                _Counted(MofNCompleteColumn()),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                _Counted(TimeRemainingColumn()),
                console=CONSOLE,
                transient=True,
            )
            cls.progress.start()
        if cls.stack:
            cls.progress.update(cls.stack[-1], visible=False)
        task = cls.progress.add_task(description, total=total, info="")
        cls.stack.append(task)
        return task

    @classmethod
    def replace(cls, old: TaskID, description: str, total: int | None) -> TaskID:
        """A fresh line in place of `old` (new description, total and clock)."""
        assert cls.progress is not None
        new = cls.progress.add_task(description, total=total, info="", visible=cls.stack[-1] == old)
        cls.stack[cls.stack.index(old)] = new
        cls.progress.remove_task(old)
        return new

    @classmethod
    def close(cls, task: TaskID) -> None:
        assert cls.progress is not None
        cls.stack.remove(task)
        cls.progress.remove_task(task)
        if cls.stack:
            cls.progress.update(cls.stack[-1], visible=True)
        else:
            cls.progress.stop()
            cls.progress = None


class Bar:
    """One line of the display: `bar(done, total)` draws a count, bar and ETA; a new
    `description` starts the line afresh (a new stage). Does nothing when disabled."""

    def __init__(self, description: str, enabled: bool, unit: str | None = None) -> None:
        self.description = description
        self.unit = unit
        self.task: TaskID | None = _Live.open(description, None) if enabled else None

    def __call__(self, done: int, total: int | None, description: str | None = None, info: str | None = None) -> None:
        if self.task is None or _Live.progress is None:
            return
        total = total or None  # 0: no count, a bare pulse
        if description is not None and description != self.description:
            self.description = description
            self.task = _Live.replace(self.task, description, total)
        progress = _Live.progress
        if info is None and self.unit is not None:
            speed = next(t.speed for t in progress.tasks if t.id == self.task)
            info = f"{speed:.2f} {self.unit}/s" if speed else ""
        progress.update(self.task, completed=done, total=total, **({} if info is None else {"info": info}))

    def close(self) -> None:
        if self.task is not None:
            _Live.close(self.task)
            self.task = None


@contextlib.contextmanager
def status_bar(description: str, enabled: bool = True, unit: str | None = None) -> Iterator[Bar]:
    """A line on stderr for the duration of the block, driven by `bar(done, total)`;
    `unit` adds a rate. Only on a terminal, and gone when the block ends."""
    bar = Bar(description, enabled and CONSOLE.is_terminal, unit)
    try:
        yield bar
    finally:
        bar.close()
