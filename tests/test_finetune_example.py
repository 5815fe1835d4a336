"""examples/finetune.sh end to end at toy scale: a style corpus of one lead and a tempo range with
a new word, LoRA and full fine-tunes of the bundled model, held-out v-loss of all three, songs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "finetune.sh"
TOY = {"CLIPS": "3", "HELD_OUT": "2", "CLIP_SECONDS": "2", "LORA_STEPS": "2", "FULL_STEPS": "2", "BATCH": "2",
       "SONG_SECONDS": "2", "WORD": "zorblat", "LEAD": "flute", "MIN_BPM": "100", "MAX_BPM": "110",
       "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_the_finetune_example_runs_and_measures_the_three_models(tmp_path):
    env = {**os.environ, **TOY}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # this interpreter's salong
    work = tmp_path / "ft"
    done = subprocess.run(["bash", str(EXAMPLE), str(work)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    for name, count in (("style", 3), ("held-out", 2)):
        entries = [json.loads(line) for line in (work / name / "metadata.jsonl").read_text().splitlines()]
        assert len(entries) == count and all((work / name / e["path"]).is_file() for e in entries)
        for e in entries:
            a = e["attributes"]
            assert a["lead"] == "flute" and 100 <= a["bpm"] <= 110
            assert e["caption"] == f"A zorblat piece at {a['bpm']} BPM in {a['key']}."
    adapter = work / "lora-run" / "model.safetensors"
    assert adapter.stat().st_size <= 2_000_000  # rank 16 on the bundled DiT, float16
    assert "lora adapter: rank 16" in done.stdout and "trained on: 3 captions, 3 files, 2 updates" in done.stdout

    rows = re.findall(r"^(base|lora|full) .*?(own|none): .*\| mean (\d+\.\d+)$",
                      (work / "held-out-loss.txt").read_text(), re.M)
    expected = [(kind, cond) for kind in ("base", "lora", "full") for cond in ("own", "none")]
    assert [(kind, cond) for kind, cond, _ in rows] == expected
    assert all(0 < float(mean) < 10 for _, _, mean in rows)
    for song in ("base", "lora", "lora-half", "full"):
        assert (work / "songs" / f"{song}.wav").stat().st_size > 1000
    spectra = (work / "songs" / "spectra.txt").read_text()
    assert "librosa is not installed" in spectra or len(re.findall(r"spectrum distance to the style \d", spectra)) == 4
