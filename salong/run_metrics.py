"""A training run's metrics.jsonl: one JSON object per logged step, written by the trainer
and read by `salong plot` and a resumed run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from salong.checks import refuse_special
from salong.errors import SalongError
from salong.textfile import parse_json, split_lines

METRICS_FILE = "metrics.jsonl"


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """One JSON object per line, flushed, so a crash loses at most the line being written
    (a resumed run drops a cut-off line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def metrics_lines(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(line, record) for each line of a metrics.jsonl that holds a record with an integer
    step; a line cut short by a killed process is passed over."""
    for line in split_lines(text):  # a U+2028 inside a record is not a line break
        try:
            record = parse_json(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            yield line, record


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (a run folder or the file itself)."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    refuse_special(file, "metrics file")  # a named pipe would be waited on for ever, and is no missing file
    if not file.is_file():
        raise SalongError(f"{str(path)!r} is not a training run folder (no {METRICS_FILE}); give a run folder "
                          "or an audio file")
    records = [record for _, record in metrics_lines(file.read_text(encoding="utf-8", errors="replace"))]
    if not records:
        raise SalongError(f"{str(file)!r} holds no metrics yet; plot the run after its first log line")
    return records
