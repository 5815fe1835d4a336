"""What a training run shows: means of the logged values and the progress line
(`salong.progress`) or, off a terminal, plain log lines."""

from __future__ import annotations

from salong.progress import CONSOLE, Bar


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
