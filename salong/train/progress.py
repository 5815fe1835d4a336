"""What a training run shows: means of the logged values, the progress line
(`salong.progress`) or, off a terminal, plain log lines, and the metrics.jsonl lines."""

from __future__ import annotations

import time
from pathlib import Path

from salong.progress import CONSOLE, Bar
from salong.run_metrics import append_metrics


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


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Display:
    """Training progress: a line (step i/N, losses, steps/s, ETA) on the shared display
    when stderr is a terminal; one plain line per log step otherwise (cluster logs).
    Never writes to stdout."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.console = CONSOLE
        self.bar = Bar("training", enabled and self.console.is_terminal)
        self.bar(start, total)

    def step(self, step: int, info: str, rate: float) -> None:
        self.bar(step, self.total, info=f"{info}  {rate:.3g} steps/s")

    def log(self, step: int, info: str, rate: float) -> None:
        if self.enabled and self.bar.task is None:
            eta = (self.total - step) / rate if rate > 0 else 0.0
            text = f"step {step}/{self.total}  {info}  {rate:.3g} steps/s  ETA {hms(eta)}"
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.bar.close()


class RunLog:
    """The progress display after every update, and a metrics.jsonl line (means over the
    interval) every `log_every` updates and after the last; only the main process writes."""

    def __init__(self, parts: list[str], steps: int, log_every: int, metrics_path: Path, start_step: int,
                 main: bool, quiet: bool) -> None:
        self.parts, self.steps, self.log_every, self.main = parts, steps, log_every, main
        self.display = Display(steps, start_step, enabled=main and not quiet)
        self.window = LogWindow()
        self.metrics_path = metrics_path
        self.t_start = self.t_log = time.monotonic()
        self.step_log, self.rate = start_step, 0.0

    def after(self, step: int) -> None:
        """Log update `step` (1-based: the number of updates done)."""
        window = self.window
        info = "  ".join(
            f"{name} {window.last[f'{name}/loss']:.4g}" for name in self.parts if f"{name}/loss" in window.last
        )
        if step % self.log_every == 0 or step == self.steps:
            now = time.monotonic()
            self.rate = (step - self.step_log) / max(now - self.t_log, 1e-9)
            self.t_log, self.step_log = now, step
            lrs = {f"{name}/lr": window.last[f"{name}/lr"] for name in self.parts if f"{name}/lr" in window.last}
            record = {"step": step, "time": round(time.time(), 3), "elapsed": round(now - self.t_start, 3)}
            record.update({"steps_per_s": round(self.rate, 4), **window.flush(), **lrs})
            if self.main:
                append_metrics(self.metrics_path, record)
                self.display.log(step, info, self.rate)
        self.display.step(step, info, self.rate)

    def close(self) -> None:
        self.display.close()
