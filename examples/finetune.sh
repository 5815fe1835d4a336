#!/usr/bin/env bash
# Fine-tune the bundled model on a style it has not seen, with LoRA and fully, and show that
# it moved: held-out v-loss on the style (benchmarks/style_loss.py) and songs with and
# without the adapter.
#
#   bash examples/finetune.sh [WORK]                 (WORK defaults to ./salong-finetune)
#   CLIPS=6 HELD_OUT=3 LORA_STEPS=20 FULL_STEPS=20 SONG_SECONDS=5 bash examples/finetune.sh /tmp/ft   # smoke run
#
# The style: `salong synth` pieces with one lead instrument (LEAD) in a tempo range
# (MIN_BPM..MAX_BPM), recaptioned with a word the model has never read (WORD), e.g.
# "A glimmerwave piece at 78 BPM in F minor." The pieces keep their tempo and key in the
# metadata, so the bundled model's beat and key controls train as before. CLIPS pieces are
# the training set, HELD_OUT more (other seeds, same style) measure the loss.
# For your own recordings, put them in a folder with a metadata.jsonl of
# {"path": ..., "caption": ...} lines (bpm and key if you know them) and start at step 2.
set -euo pipefail

work=${1:-salong-finetune}
WORD=${WORD:-glimmerwave}
LEAD=${LEAD:-bells}
MIN_BPM=${MIN_BPM:-70}
MAX_BPM=${MAX_BPM:-90}
CLIPS=${CLIPS:-30}               # training clips
HELD_OUT=${HELD_OUT:-8}          # held-out clips of the same style
CLIP_SECONDS=${CLIP_SECONDS:-10} # clips are CLIP_SECONDS to 1.5 x CLIP_SECONDS long
LORA_RANK=${LORA_RANK:-16}
LORA_STEPS=${LORA_STEPS:-600}
LORA_LR=${LORA_LR:-1e-3}         # adapters start at zero and have few weights: a higher rate than full
FULL_STEPS=${FULL_STEPS:-600}
FULL_LR=${FULL_LR:-5e-5}         # every weight moves: a low rate keeps what the model knew
BATCH=${BATCH:-4}
SONG_SECONDS=${SONG_SECONDS:-20}
SEED=${SEED:-28}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ -e "$work" ]; then
    echo "$work exists; remove it or give another folder" >&2
    exit 1
fi
mkdir -p "$work"
here=$(cd "$(dirname "$0")/.." && pwd)
base=$(python -c "from salong.bundled import default_generator; print(default_generator())")
timed() { local start=$SECONDS; "$@"; echo "  ($(( SECONDS - start )) s)" >&2; }

# 1. The style corpus: one lead, a tempo range, a new word in every caption.
salong synth $(( CLIPS + HELD_OUT )) "$work/corpus" --seed "$SEED" --lead "$LEAD" --min-bpm "$MIN_BPM" \
    --max-bpm "$MAX_BPM" --min-seconds "$CLIP_SECONDS" --max-seconds "$(python -c "print($CLIP_SECONDS * 1.5)")"
python - "$work" "$CLIPS" "$WORD" <<'EOF'
import json, shutil, sys
from pathlib import Path

work, clips, word = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lines = [json.loads(line) for line in (work / "corpus" / "metadata.jsonl").read_text().splitlines()]
for name, part in (("style", lines[:clips]), ("held-out", lines[clips:])):
    (work / name / "audio").mkdir(parents=True)
    for entry in part:
        shutil.move(work / "corpus" / entry["path"], work / name / entry["path"])
        a = entry["attributes"]
        entry["caption"] = f"A {word} piece at {a['bpm']} BPM in {a['key']}."  # the lead and mood go unsaid
    (work / name / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in part))
shutil.rmtree(work / "corpus")
print(f"{work / 'style'}: {clips} clips, {work / 'held-out'}: {len(lines) - clips}; e.g. {lines[0]['caption']!r}")
EOF

# 2. Fine-tune: LoRA adapters (the DiT frozen), then every DiT weight. Fixed crops of
#    CLIP_SECONDS: each step sees the same length, and no crop is padding.
common=(--init "$base" --batch-size "$BATCH" --crops fixed --window-seconds "$CLIP_SECONDS" --demo-every 0
        --checkpoint-every 100000 --log-every 50 --quiet)
timed salong train dit --data "$work/style" -o "$work/lora-run" --lora "$LORA_RANK" --steps "$LORA_STEPS" \
    --lr "$LORA_LR" "${common[@]}"
timed salong train dit --data "$work/style" -o "$work/full-run" --steps "$FULL_STEPS" --lr "$FULL_LR" "${common[@]}"
salong info "$work/lora-run/model.safetensors"
ls -l "$work/lora-run/model.safetensors" "$work/full-run/model.safetensors"

# 3. Held-out v-loss: the held-out clips encoded by the bundled model's own encoders (a
#    one-update run, thrown away), then the base, the adapter and the full fine-tune on them.
salong train dit --data "$work/held-out" --init "$base" -o "$work/held-out-run" --steps 1 --demo-every 0 --quiet \
    >/dev/null
python "$here/benchmarks/style_loss.py" --model "$base" --cache "$work/held-out-run/prepared/cache" \
    --lora "$work/lora-run/model.safetensors" --full "$work/full-run/model.safetensors" --items "$HELD_OUT" \
    --frames "$(python -c "print(int($CLIP_SECONDS * 44100 / 2048))")" | tee "$work/held-out-loss.txt"

# 4. Songs with the new word: the base model, the adapter at two strengths, the full fine-tune.
prompt="A $WORD piece at 80 BPM in A minor."
mkdir -p "$work/songs"
salong generate "$prompt" -s "$SONG_SECONDS" --seed 0 -o "$work/songs/base.wav"
salong generate "$prompt" -s "$SONG_SECONDS" --seed 0 --lora "$work/lora-run/model.safetensors" \
    -o "$work/songs/lora.wav"
salong generate "$prompt" -s "$SONG_SECONDS" --seed 0 --lora "$work/lora-run/model.safetensors:0.5" \
    -o "$work/songs/lora-half.wav"
salong generate "$prompt" -s "$SONG_SECONDS" --seed 0 --model "$work/full-run/model.safetensors" \
    -o "$work/songs/full.wav"
# How far each song's average log-mel spectrum (level removed) is from the held-out style
# clips' (RMS over 64 bands, lower is nearer), with its tempo (needs librosa).
python - "$work" <<'PY' | tee "$work/songs/spectra.txt"
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
try:
    import librosa
except ImportError:
    print("librosa is not installed: no spectrum comparison (pip install librosa)")
    sys.exit(0)
from salong.audio import read_audio
from salong.evaluation import estimate_tempo

work = Path(sys.argv[1])


def spectrum(path):
    audio, rate = read_audio(path)
    mel = np.log(librosa.feature.melspectrogram(y=audio.mean(0), sr=rate, n_mels=64).mean(1) + 1e-8)
    return mel - mel.mean(), estimate_tempo(audio, rate)


style = np.mean([spectrum(p)[0] for p in sorted((work / "held-out" / "audio").glob("*.wav"))], axis=0)
for name in ("base", "lora-half", "lora", "full"):
    mel, tempo = spectrum(work / "songs" / f"{name}.wav")
    print(f"{name:>9}: spectrum distance to the style {np.sqrt(np.mean((mel - style) ** 2)):.2f}, tempo {tempo:.1f} BPM")
PY
echo "songs in $work/songs; held-out losses in $work/held-out-loss.txt"
