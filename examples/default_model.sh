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
#
# On a machine whose run folders are gone, continue from a shipped generator instead of
# starting over: INIT=checkpoints/salong-default.safetensors bash examples/default_model.sh
# writes the corpus, skips the autoencoder and CLAP stages (the DiT run takes the generator's
# own) and starts the DiT run from the generator's DiT weights (fresh optimiser).
set -euo pipefail

WORK=${1:-${SALONG_WORK:-$HOME/salong-runs/default}}
SEED=${SEED:-2026}
CORPUS_PIECES=${CORPUS_PIECES:-600}   # log-uniform 4..285 s: about 11 h of audio
CORPUS_MIN_SECONDS=${CORPUS_MIN_SECONDS:-4}
CORPUS_MAX_SECONDS=${CORPUS_MAX_SECONDS:-285}
# Wordings per piece: each training crop draws one, so models learn the words, not 600 captions.
CORPUS_CAPTIONS=${CORPUS_CAPTIONS:-8}
# Share of pieces without drums, 0 to 1 (`salong synth --no-drums`); empty: the synth's own draw
# (one style in five). The bundled model's last two runs trained on the corpus with 0.5 (its card).
CORPUS_NO_DRUMS=${CORPUS_NO_DRUMS-0.5}
NO_DRUMS=()
if [ -n "$CORPUS_NO_DRUMS" ]; then NO_DRUMS=(--no-drums "$CORPUS_NO_DRUMS"); fi
AE_STEPS=${AE_STEPS:-8000}
# CLAP stopped at 1517 of a planned 6000 updates: its held-out recall had flattened (text->audio
# R@5 0.15 at 1000 and at 1500 updates, 67 pairs) and the cores went to the autoencoder.
CLAP_STEPS=${CLAP_STEPS:-1517}
DIT_STEPS=${DIT_STEPS:-20000}
# Decoder-only updates after the DiT (0: none): the autoencoder's decoder trained further on
# its frozen encoder's mean latents, so the DiT's latents stay valid (docs/architecture.md).
# The bundled decoder ran 2511 (its eval STFT flattened: 2.575 at 2000, 2.558 at 2500).
DECODER_STEPS=${DECODER_STEPS:-2500}
# Width of the decoder head that run adds (0: none; a spectral decoder only): a per-frame MLP
# that starts at zero, for harmonics the linear output layer smears (docs/architecture.md).
DECODER_HEAD=${DECODER_HEAD:-512}
# The DiT's learning rate and data-order seed. A run continued from a generator (INIT) at a
# lower rate is a cooldown: the bundled DiT's last 4344 updates ran at 4e-5 (seed 9) and
# lowered its held-out v-loss at every noise level (benchmarks/text_use.py).
DIT_LR=${DIT_LR:-2e-4}
DIT_SEED=${DIT_SEED:-0}
# Control conditioners of a new DiT run (docs/architecture.md, Controls): beat and bar phase
# per latent frame at each piece's tempo, and its key, from the corpus's attributes. A run
# started from a generator without them (INIT) gets them added at zero. Empty: none.
# drums adds the drums/groove choice, and form the section of each frame (docs/architecture.md,
# Controls), and chords the chord of each frame (the synth writes each piece's). The bundled DiT
# got beat,key first (2000 updates), then form and drums as well (6111 more, from that generator
# with INIT, DIT_LR=1e-4 DIT_SEED=11), then 3819 on the corpus half without drums (seed 12) and
# 2745 with chords as well (seed 13; see its card).
CONTROLS=${CONTROLS-beat,key,drums,form,chords}
# Spell each caption's and prompt's words alike whatever their case or place (1) or as written (0).
CANONICAL_TEXT=${CANONICAL_TEXT:-1}
# Sizes; the bundled model uses these defaults (tiny ones make a quick smoke run of the recipe).
AE_PRESET=${AE_PRESET:-spectral}
CLAP_PRESET=${CLAP_PRESET:-small}
DIT_PRESET=${DIT_PRESET:-compact}
# The CLAP layer the DiT reads: -5 is the small tower's token embeddings. Its layers lose
# much of what the words say (docs/architecture.md, CLAP, "What the layers keep").
TEXT_LAYER=${TEXT_LAYER:--5}
# Training times with the noise-to-signal ratio scaled by this: more of the high-noise
# steps, where the sampler decides a song's drums and instruments (docs/diffusion.md).
TIMESTEP_SHIFT=${TIMESTEP_SHIFT:-4}
# Sampling defaults stored in the exported model. Starting points: set them from
# `benchmarks/adherence.py --steps ...` figures on the trained DiT before shipping.
# Measured on a DiT 3101 updates past the bundled one (not shipped): at 30 s, 15 steps
# scored the same as 30 on the 24 prompts (tempo, drums, mode, key) in 11.2 s per song
# against 13.6, and CFG 8 moved one song each in tempo and drums against CFG 5 (noise at
# 24 prompts); at 285 s one song of 4 had a gap (2.26 s at 15 steps, 2.86 s at 30), so the
# gap comes from the weights, not the step count.
# The DiT with beat and key conditioners scored the same at 15 steps as at 30 on 24 prompts
# (tempo 0.92, beats 0.90 vs 0.89, key 13 vs 14 songs); 15 steps make a 30 s song in 7.1 s (the
# previous bundle took 11.5 s at 30 steps).
SAMPLE_STEPS=${SAMPLE_STEPS:-15}
CFG_SCALE=${CFG_SCALE:-5}
# Guidance at noise levels 0.7-1 only (the last 3 of 15 steps unguided): over the 48 benchmark
# songs "no drums" was followed in 18 of 24 against 8 with guidance at every step, drums as asked
# in 42 of 48 against 32, tempo 39 against 41 (docs/architecture.md, Controls).
CFG_INTERVAL=${CFG_INTERVAL:-0.7,1}
# The share of the guidance the beat control gets in songs asked with no drums (1: as the rest);
# at full strength it draws percussive onsets on the grid there. Over the 48 benchmark songs,
# 0.5 followed "no drums" in 20 of 24 against 18, tempo 38 against 39 (docs/architecture.md, Controls).
BEAT_GUIDANCE_WITHOUT_DRUMS=${BEAT_GUIDANCE_WITHOUT_DRUMS:-0.5}
INIT=${INIT:-}             # a generator file to continue from (see above); empty: train every stage
EVAL_ARGS=${EVAL_ARGS:-}   # more options for benchmarks/adherence.py (--quick for a smoke run)
OUT_MODEL=${OUT_MODEL:-$(cd "$(dirname "$0")/.." && pwd)/checkpoints/salong-default.safetensors}
THREADS=${THREADS:-$(nproc)}
HALF=$(( THREADS > 1 ? THREADS / 2 : 1 ))

# Niced, with a fixed thread count: two processes oversubscribing the cores slow every op down.
RUN="nice -n 19 salong"
threads() { env OMP_NUM_THREADS=$1 MKL_NUM_THREADS=$1 "${@:2}"; }
if [ -n "$INIT" ]; then
    [ -f "$INIT" ] || { echo "INIT=$INIT: no such file; give a generator file (salong-default.safetensors)" >&2; exit 2; }
    INIT=$(cd "$(dirname "$INIT")" && pwd)/$(basename "$INIT")
fi
mkdir -p "$WORK"
# A work folder started from a generator stays one: init.json (written when the DiT run
# starts) names it, and later runs of the script need no INIT.
if [ -z "$INIT" ] && [ -f "$WORK/init.json" ]; then
    INIT=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["init"])' "$WORK/init.json")
fi

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

# steps_done RUN_DIR: the step of the run's newest checkpoint (0 without one).
steps_done() {
    local newest
    newest=$(compgen -G "$1/checkpoints/step_*.safetensors" | sort | tail -n 1)
    [ -n "$newest" ] || { echo 0; return; }
    newest=${newest##*/step_}
    echo $((10#${newest%.safetensors}))
}

# 1. Corpus: procedural music with exact captions; metadata.jsonl is written last, so its
#    presence means the corpus is complete.
if [ ! -f "$WORK/corpus/metadata.jsonl" ]; then
    stage corpus threads "$THREADS" $RUN synth "$CORPUS_PIECES" "$WORK/corpus" --seed "$SEED" --durations log \
        --min-seconds "$CORPUS_MIN_SECONDS" --max-seconds "$CORPUS_MAX_SECONDS" --jobs "$THREADS" --overwrite \
        --captions "$CORPUS_CAPTIONS" "${NO_DRUMS[@]}"
    CORPUS_WRITTEN=1
elif { [ "$CORPUS_CAPTIONS" -gt 1 ] && ! grep -q '"captions"' "$WORK/corpus/metadata.jsonl"; } \
        || ! grep -q '"chords"' "$WORK/corpus/metadata.jsonl"; then
    # a corpus written with one caption per piece gets its other wordings, and one written before
    # the synth recorded each piece's chords gets them; the audio stays
    $RUN synth "$CORPUS_PIECES" "$WORK/corpus" --captions "$CORPUS_CAPTIONS" --recaption > /dev/null
fi
# What the corpus was written with, for the card; a kept corpus keeps its own record (a changed
# default, such as CORPUS_NO_DRUMS, does not rewrite what its pieces are).
if [ "${CORPUS_WRITTEN:-0}" = 1 ] || [ ! -f "$WORK/corpus.json" ]; then
    printf '{"seed": %s, "pieces": %s, "durations": "log", "min_seconds": %s, "max_seconds": %s, "captions": %s, "no_drums": %s}\n' \
        "$SEED" "$CORPUS_PIECES" "$CORPUS_MIN_SECONDS" "$CORPUS_MAX_SECONDS" "$CORPUS_CAPTIONS" "${CORPUS_NO_DRUMS:-null}" \
        > "$WORK/corpus.json"
fi

# 2. Autoencoder and CLAP do not depend on each other: they train side by side, each on half
#    the cores (all of them for the autoencoder once CLAP is done). A finished stage only
#    re-exports its model.
#    With INIT both come from that generator instead.
if [ -z "$INIT" ]; then
    AE_THREADS=$HALF
    if [ "$(steps_done "$WORK/clap")" -ge "$CLAP_STEPS" ]; then AE_THREADS=$THREADS; fi
    #    Autoencoder: the spectral one (STFT magnitudes in and out, Griffin-Lim phases) on 2 s
    #    crops, magnitude loss + KL. The Oobleck `compact` kept rhythm but lost every note after
    #    5400 updates (4.3 h of these cores); this one draws notes within minutes (docs/architecture.md).
    stage autoencoder threads "$AE_THREADS" $RUN train autoencoder --data "$WORK/corpus" --out "$WORK/autoencoder" \
        --preset "$AE_PRESET" --steps "$AE_STEPS" --batch-size 16 --window-seconds 2.0 --lr 3e-4 \
        --seed 0 --checkpoint-every 250 --demo-every 1000 --eval-every 1000 \
        --quiet $(resume_flag "$WORK/autoencoder") &
    AE_PID=$!
    #    CLAP: contrastive on 10 s crops, 10% of the pieces held out for retrieval recall.
    stage clap threads "$HALF" $RUN train clap --data "$WORK/corpus" --out "$WORK/clap" \
        --preset "$CLAP_PRESET" --steps "$CLAP_STEPS" --batch-size 16 --lr 5e-4 --seed 0 \
        --checkpoint-every 250 --eval-every 500 --quiet $(resume_flag "$WORK/clap") &
    CLAP_PID=$!
    wait $AE_PID
    wait $CLAP_PID
fi

# 3. DiT on the frozen autoencoder's latents and CLAP's text tokens: variable-length crops
#    (4 s to the 285 s window), so a request samples only the frames it needs, as trained.
#    The balanced law gives every octave of lengths the same compute: a step costs about
#    a fifth of log-uniform's on CPU. The dataset is encoded once into dit/prepared/.
NEW_DIT=()
if [ -n "$CONTROLS" ]; then NEW_DIT+=(--controls "$CONTROLS"); fi
if [ "$CANONICAL_TEXT" = 1 ]; then NEW_DIT+=(--canonical-text); else NEW_DIT+=(--as-written-text); fi
if compgen -G "$WORK/dit/checkpoints/step_*.safetensors" > /dev/null; then DIT_START=(--resume)
elif [ -n "$INIT" ]; then
    DIT_START=(--init "$INIT" "${NEW_DIT[@]}")
    python -c 'import json, sys; from salong.recipe import model_sha256
print(json.dumps({"init": sys.argv[1], "sha256": model_sha256(sys.argv[1])}))' "$INIT" > "$WORK/init.json"
else DIT_START=(--autoencoder "$WORK/autoencoder/model.safetensors" --text-encoder "$WORK/clap/model.safetensors"
                "${NEW_DIT[@]}")
fi
stage dit threads "$THREADS" $RUN train dit --data "$WORK/corpus" --out "$WORK/dit" "${DIT_START[@]}" \
    --text-layer "$TEXT_LAYER" --timestep-shift "$TIMESTEP_SHIFT" --preset "$DIT_PRESET" --crops variable --crop-law balanced --min-crop-seconds 4 --steps "$DIT_STEPS" --batch-size 8 --lr "$DIT_LR" \
    --seed "$DIT_SEED" --checkpoint-every 250 --demo-every 2000 --quiet

# 4. Export: EMA weights, matrices in float16, with the measured sampling defaults.
stage export threads "$THREADS" $RUN train export "$WORK/dit" -o "$WORK/salong-default.safetensors" --half --overwrite \
    --steps "$SAMPLE_STEPS" --cfg-scale "$CFG_SCALE" --cfg-interval "$CFG_INTERVAL" \
    --beat-guidance-without-drums "$BEAT_GUIDANCE_WITHOUT_DRUMS"

# 4b. Decoder: the generator's autoencoder decoder alone, trained further on the mean latents
#     of its frozen encoder (the latents the DiT learned), then put into the generator.
if [ "$DECODER_STEPS" -gt 0 ]; then
    if [ -n "$(resume_flag "$WORK/decoder")" ]; then DECODER_START=(--resume)
    else DECODER_START=(--init "$WORK/salong-default.safetensors" --decoder-only --decoder-head "$DECODER_HEAD"); fi
    stage decoder threads "$THREADS" $RUN train autoencoder --data "$WORK/corpus" --out "$WORK/decoder" \
        "${DECODER_START[@]}" --steps "$DECODER_STEPS" --batch-size 16 --window-seconds 2.0 --lr 2e-4 --seed 1 \
        --checkpoint-every 250 --demo-every 1000 --eval-every 500 --quiet
    stage export-decoder threads "$THREADS" $RUN train export "$WORK/decoder" --generator \
        "$WORK/salong-default.safetensors" -o "$WORK/with-decoder.safetensors" --half --overwrite
    mv "$WORK/with-decoder.safetensors" "$WORK/salong-default.safetensors"
fi

# 5. Evaluate: prompt adherence (tempo, drums, mode, silence) at 30 s and 285 s, both frame
#    modes, the estimators' own ceiling, autoencoder reconstruction and CLAP recall.
#    With INIT the autoencoder is the copy the DiT run took from the generator, and CLAP recall
#    is not measured: a generator holds CLAP's text tower only.
MODELS=(--autoencoder "$WORK/autoencoder/model.safetensors" --clap "$WORK/clap/model.safetensors")
if [ -n "$INIT" ]; then MODELS=(--autoencoder "$WORK/dit/prepared/autoencoder.safetensors"); fi
stage evaluate threads "$THREADS" nice -n 19 python "$(dirname "$0")/../benchmarks/adherence.py" \
    --model "$WORK/salong-default.safetensors" "${MODELS[@]}" --json "$WORK/evaluation.json" $EVAL_ARGS | tee "$WORK/evaluation.txt"

# 6. Ship: the model and its card. The generator holds the autoencoder, so a standalone
#    bundled autoencoder (shipped while the DiT was still training) goes.
cp "$WORK/salong-default.safetensors" "$OUT_MODEL"
rm -f "$(dirname "$OUT_MODEL")/autoencoder.safetensors"
python "$(dirname "$0")/model_card.py" "$WORK" -o "$(dirname "$OUT_MODEL")/README.md"
echo "$OUT_MODEL"
