#!/usr/bin/env bash
# The whole system in a few minutes on a laptop CPU, with tiny models:
# a synth corpus -> autoencoder -> CLAP -> DiT -> a generated song.
# Tiny models trained for a few hundred steps make rough sounds, not music: this shows
# every command working end to end. Real models need far more data and compute.
#
#   bash examples/quickstart.sh [WORKDIR]      (default: ./salong-quickstart)
set -euo pipefail
work=${1:-salong-quickstart}
if [ -e "$work" ]; then
    echo "$work exists; remove it or give another folder" >&2
    exit 1
fi
mkdir -p "$work"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

salong synth 12 "$work/corpus" --seed 0 --min-seconds 2 --max-seconds 4
salong train autoencoder --data "$work/corpus" --out "$work/ae" --preset tiny \
    --steps 40 --batch-size 4 --window-seconds 0.5 --demo-every 0 --eval-every 0
salong train clap --data "$work/corpus" --out "$work/clap" --preset tiny --steps 60 --batch-size 8 --eval-every 0
salong train dit --data "$work/corpus" --out "$work/dit" --preset tiny \
    --autoencoder "$work/ae/model.safetensors" --text-encoder "$work/clap/model.safetensors" \
    --steps 300 --batch-size 8 --lr 1e-3 --demo-every 0
salong generate "Calm piano ballad at 70 BPM in C major" --seconds 2.5 --steps 20 --cfg-scale 3 \
    --model "$work/dit/model.safetensors" --seed 0 -o "$work/song.wav"
