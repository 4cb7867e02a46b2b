#!/usr/bin/env bash
# Reproduce the shipped sample model (docs/model_card.md) from ../shared/data, with the project's own commands.
#
#   bash scripts/train_sample_model.sh [RUN_DIR] [SECONDS]
#
# Train split only (64 videos + 2 frame folders, 44 people); the test split is used for evaluation alone.
# Resumable: run it again and every step continues where it stopped (preprocessing skips finished clips,
# training resumes from its last checkpoint; --time-limit checkpoints and stops cleanly after SECONDS of
# training, so the long run is done in sittings: the v2 model took several). Each sitting ends by exporting
# the model and evaluating it, so the card's numbers can be refreshed after any sitting.
# On a GPU add --device cuda to the train line (and a larger train.batch_size).
# When a run folder is lost (machines are not kept between sessions), INIT_FROM=MODEL_DIR starts a new run from
# that model's E, G, D (fresh optimisers, step 0, the L_MCH warm-up again): the shipped v2 model is sitting 1
# (8,140 steps) then, its run folder lost, sitting 2 started with
#   INIT_FROM=src/talking_heads/assets/sample_model bash scripts/train_sample_model.sh runs/sample_v2_s2 6000   # stopped with SIGTERM after 86 min
# and sitting 3 (8,608 steps, 85 min, to 22,348 in all: the shipped weights) with
#   INIT_FROM=src/talking_heads/assets/sample_model bash scripts/train_sample_model.sh runs/sample_v2_s3 5100
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TALKING_HEADS_DATA:-../shared/data}
RUN=${1:-runs/sample_v2}
SECONDS_LIMIT=${2:-9000}
STEPS=${STEPS:-40000}
TH=.venv/bin/talking-heads
make setup

# 1. landmarks + 128 px head crops: every frame of the train split (16,827 frames), at most 96 evenly spaced
#    frames per test clip (the evaluation's protocol picks 16 hold-out frames and up to 8 shots among them)
$TH preprocess "$DATA/videos/train" runs/data_train_128_all --size 128 --workers 2 --manifest "$DATA/manifest.csv"
$TH preprocess "$DATA/frames" runs/data_train_128_all --size 128 --workers 2 --manifest "$DATA/manifest.csv"
$TH preprocess "$DATA/videos/test" runs/data_test_128 --size 128 --max-frames 96 --workers 2 --manifest "$DATA/manifest.csv"

# 2. meta-learning with the `sample` preset, whose options won their A/B runs (docs/training_ablations.md):
#    the warp generator, a live embedder (W from the data, L_MCH at 1 after a warm-up), DiffAugment on every
#    D call, dlib's face ResNet for the face and identity terms, E/G at D's learning rate. One thread: on two
#    shared cores two threads were slower (docs/benchmarks.md). The shipped weights were trained in fp32; a new
#    run on a CPU with native bf16 (AVX-512 BF16 / AMX) trains under bf16 autocast (train.amp_cpu = "auto",
#    1.33x per step, the same quality in a 3,278-step A/B: docs/benchmarks.md); add
#    `--set train.amp_cpu=false` to the train command to repeat the fp32 arithmetic.
if [ -e "$RUN/latest" ] || [ -e "$RUN/training_state.pt" ]; then
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $TH train --data runs/data_train_128_all --out "$RUN" --steps "$STEPS" \
        --time-limit "$SECONDS_LIMIT" --set train.num_workers=1
else
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $TH train --preset sample --data runs/data_train_128_all --out "$RUN" \
        --steps "$STEPS" --time-limit "$SECONDS_LIMIT" --set train.num_workers=1 ${INIT_FROM:+--init-from "$INIT_FROM"}
fi

# 3. ship: fp16 copy of the model directory inside the package, plus the run's log, curves and last sample grid
$TH export-model "$RUN/model" src/talking_heads/assets/sample_model
mkdir -p docs/sample_model
cp "$RUN/log.jsonl" "$RUN/loss_curves.png" docs/sample_model/
cp "$(ls "$RUN"/samples/step_*.png | tail -n 1)" docs/sample_model/

# 4. the model card's numbers on the test split (10 people never seen in training, one clip each): T = 1 and 8,
#    16 hold-out frames, FF and FT with the preset's FT recipe, cross-identity puppeteering at both T
$TH evaluate --data runs/data_test_128 --out "$RUN/eval" --shots 1 8 --holdout 16 --per-identity 1 --cross \
    --threads 2
