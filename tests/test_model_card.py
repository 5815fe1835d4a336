"""examples/model_card.py: the card's row for a run reports the updates its newest checkpoint holds."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "model_card.py"


def load_script():
    spec = importlib.util.spec_from_file_location("model_card", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(run: Path, logged_steps: list[int], saved_steps: list[int]) -> None:
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "task": {"text_layer": -5, "timestep_shift": 4.0}, "train": {"steps": 30000, "batch_size": 8, "lr": 2e-4}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.1}) + "\n" for s in logged_steps))
    for step in saved_steps:
        (run / "checkpoints" / f"step_{step:07d}.safetensors").write_bytes(b"")


def test_row_takes_the_newest_checkpoint_not_the_last_logged_step(tmp_path):
    card = load_script()
    # Stopped by SIGTERM at 5003: metrics were last logged at 5000, the checkpoint holds 5003.
    write_run(tmp_path / "dit", [4900, 5000], [4750, 5003])
    row, task = card.stage_facts(tmp_path, "dit")
    assert row.startswith("| dit | 5003 of 30000 |") and "CLAP layer -5, timestep shift 4" in row
    assert task["text_layer"] == -5


def test_row_without_checkpoints_falls_back_to_the_metrics(tmp_path):
    card = load_script()
    write_run(tmp_path / "clap", [250, 500], [])
    row, _ = card.stage_facts(tmp_path, "clap")
    assert row.startswith("| clap | 500 of 30000 |")
