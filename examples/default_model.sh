#!/usr/bin/env bash
# Reproduce salong's bundled model: corpus -> autoencoder -> CLAP -> DiT -> export -> evaluate -> model card.
#
#   bash examples/default_model.sh [WORK]          (WORK defaults to ~/salong-runs/default)
#
# Every stage is resumable: run the script again and it continues where it stopped (a
# finished stage is skipped, an interrupted one goes on with --resume). Each stage's step
# budget is a variable below; raise one and rerun to train that stage further. The wall
# time of every stage run is appended to WORK/walltime.tsv. The same script runs on a CUDA
# machine unchanged (the trainers pick the GPU and bf16 autocast there).
#
# Keep WORK outside the checkout: it holds the corpus (about 7 GB) and the run folders.
set -euo pipefail

WORK=${1:-${SALONG_WORK:-$HOME/salong-runs/default}}
SEED=${SEED:-2026}
CORPUS_PIECES=${CORPUS_PIECES:-600}   # log-uniform 4..285 s: about 11 h of audio
AE_STEPS=${AE_STEPS:-10000}
CLAP_STEPS=${CLAP_STEPS:-6000}
DIT_STEPS=${DIT_STEPS:-20000}
# Sizes; the bundled model uses these defaults (tiny ones make a quick smoke run of the recipe).
AE_PRESET=${AE_PRESET:-compact}
CLAP_PRESET=${CLAP_PRESET:-small}
DIT_PRESET=${DIT_PRESET:-compact}
# Sampling defaults stored in the exported model. Starting points: set them from
# `benchmarks/adherence.py --steps ...` figures on the trained DiT before shipping.
SAMPLE_STEPS=${SAMPLE_STEPS:-30}
CFG_SCALE=${CFG_SCALE:-5}
OUT_MODEL=${OUT_MODEL:-$(cd "$(dirname "$0")/.." && pwd)/checkpoints/salong-default.safetensors}
THREADS=${THREADS:-$(nproc)}
HALF=$(( THREADS > 1 ? THREADS / 2 : 1 ))

# Niced, with a fixed thread count: two processes oversubscribing the cores slow every op down.
RUN="nice -n 19 salong"
threads() { env OMP_NUM_THREADS=$1 MKL_NUM_THREADS=$1 "${@:2}"; }
mkdir -p "$WORK"

# stage NAME COMMAND...: run a stage, appending "NAME<TAB>seconds<TAB>exit status" to walltime.tsv.
stage() {
    local name=$1; shift
    local t0=$SECONDS status=0
    echo "== $name: $*" >&2
    "$@" || status=$?
    printf '%s\t%d\t%d\t%s\n' "$name" $((SECONDS - t0)) "$status" "$(date -u +%FT%TZ)" >> "$WORK/walltime.tsv"
    return $status
}

# resume_flag RUN_DIR: --resume when the run folder already holds a checkpoint.
resume_flag() { if compgen -G "$1/checkpoints/step_*.safetensors" > /dev/null; then echo --resume; fi; }

# 1. Corpus: procedural music with exact captions; metadata.jsonl is written last, so its
#    presence means the corpus is complete.
if [ ! -f "$WORK/corpus/metadata.jsonl" ]; then
    stage corpus threads "$THREADS" $RUN synth "$CORPUS_PIECES" "$WORK/corpus" --seed "$SEED" --durations log \
        --min-seconds 4 --max-seconds 285 --jobs "$THREADS" --overwrite
fi
printf '{"seed": %s, "pieces": %s, "durations": "log", "min_seconds": 4, "max_seconds": 285}\n' \
    "$SEED" "$CORPUS_PIECES" > "$WORK/corpus.json"

# 2. Autoencoder and CLAP do not depend on each other: they train side by side, each on half
#    the cores. A finished stage only re-exports its model.
#    Autoencoder: multi-resolution STFT + KL on 1 s crops (the critic stays off).
stage autoencoder threads "$HALF" $RUN train autoencoder --data "$WORK/corpus" --out "$WORK/autoencoder" \
    --preset "$AE_PRESET" --steps "$AE_STEPS" --batch-size 4 --window-seconds 1.0 --lr 3e-4 \
    --adversarial-start 1000000000 --compile --seed 0 --checkpoint-every 250 --demo-every 1000 --eval-every 500 \
    --quiet $(resume_flag "$WORK/autoencoder") &
AE_PID=$!
#    CLAP: contrastive on 10 s crops, 10% of the pieces held out for retrieval recall.
stage clap threads "$HALF" $RUN train clap --data "$WORK/corpus" --out "$WORK/clap" \
    --preset "$CLAP_PRESET" --steps "$CLAP_STEPS" --batch-size 16 --lr 5e-4 --seed 0 \
    --checkpoint-every 250 --eval-every 500 --quiet $(resume_flag "$WORK/clap") &
CLAP_PID=$!
wait $AE_PID
wait $CLAP_PID

# 3. DiT on the frozen autoencoder's latents and CLAP's text tokens: variable-length crops
#    (4 s to the 285 s window), so a request samples only the frames it needs, as trained.
#    The balanced law gives every octave of lengths the same compute: a step costs about
#    a fifth of log-uniform's on CPU. The dataset is encoded once into dit/prepared/.
stage dit threads "$THREADS" $RUN train dit --data "$WORK/corpus" --out "$WORK/dit" \
    --autoencoder "$WORK/autoencoder/model.safetensors" --text-encoder "$WORK/clap/model.safetensors" \
    --preset "$DIT_PRESET" --crops variable --crop-law balanced --min-crop-seconds 4 --steps "$DIT_STEPS" --batch-size 8 --lr 2e-4 --compile \
    --seed 0 --checkpoint-every 250 --demo-every 2000 --quiet $(resume_flag "$WORK/dit")

# 4. Export: EMA weights, matrices in float16, with the measured sampling defaults.
stage export threads "$THREADS" $RUN train export "$WORK/dit" -o "$WORK/salong-default.safetensors" --half --overwrite \
    --steps "$SAMPLE_STEPS" --cfg-scale "$CFG_SCALE"

# 5. Evaluate: prompt adherence (tempo, drums, mode, silence) at 30 s and 285 s, both frame
#    modes, the estimators' own ceiling, autoencoder reconstruction and CLAP recall.
stage evaluate threads "$THREADS" nice -n 19 python "$(dirname "$0")/../benchmarks/adherence.py" \
    --model "$WORK/salong-default.safetensors" --autoencoder "$WORK/autoencoder/model.safetensors" \
    --clap "$WORK/clap/model.safetensors" --json "$WORK/evaluation.json" | tee "$WORK/evaluation.txt"

# 6. Ship: the model and its card. The generator holds the autoencoder, so a standalone
#    bundled autoencoder (shipped while the DiT was still training) goes.
cp "$WORK/salong-default.safetensors" "$OUT_MODEL"
rm -f "$(dirname "$OUT_MODEL")/autoencoder.safetensors"
python "$(dirname "$0")/model_card.py" "$WORK" -o "$(dirname "$OUT_MODEL")/README.md"
echo "$OUT_MODEL"
