"""What a run reports: metrics.jsonl lines and the progress display on stderr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class LogWindow:
    """Means of the logged values since the last metrics line; the latest value of each too."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last[key] = value

    def flush(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON object per line, flushed, so a crash loses at most the line being written
    (a resumed run drops a cut-off line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Display:
    """A rich progress bar (step i/N, losses, steps/s, ETA) when stderr is a terminal; one
    plain line per log step otherwise (cluster logs). Never writes to stdout."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.console = Console(stderr=True)
        self.progress: Progress | None = None
        if enabled and self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task_id = self.progress.add_task("training", total=total, completed=start, info="")
            self.progress.start()

    def step(self, step: int, info: str, rate: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step, info=f"{info}  {rate:.3g} steps/s")

    def log(self, step: int, info: str, rate: float) -> None:
        if self.enabled and self.progress is None:
            eta = (self.total - step) / rate if rate > 0 else 0.0
            text = f"step {step}/{self.total}  {info}  {rate:.3g} steps/s  ETA {hms(eta)}"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
