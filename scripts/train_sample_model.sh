#!/usr/bin/env bash
# Reproduce the shipped sample model (docs/model_card.md) from ../shared/data, with the project's own commands.
#
#   bash scripts/train_sample_model.sh [RUN_DIR] [SECONDS]
#
# Train split only (64 videos + 2 frame folders, 44 people); the test split is used for evaluation alone.
# Resumable: run it again and every step continues where it stopped (preprocessing skips finished clips,
# training resumes from its last checkpoint; --time-limit checkpoints and stops cleanly after SECONDS of
# training, so a long run can be done in several sittings). On a GPU add --device cuda to the train line.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TALKING_HEADS_DATA:-../shared/data}
RUN=${1:-runs/sample_v1}
SECONDS_LIMIT=${2:-4000}
TH=.venv/bin/talking-heads
make setup

# 1. landmarks + 128 px head crops, at most 96 evenly spaced frames per clip
$TH preprocess "$DATA/videos/train" runs/data_train_128 --size 128 --max-frames 96 --workers 2 --manifest "$DATA/manifest.csv"
$TH preprocess "$DATA/frames" runs/data_train_128 --size 128 --max-frames 96 --workers 2 --manifest "$DATA/manifest.csv"
$TH preprocess "$DATA/videos/test" runs/data_test_128 --size 128 --max-frames 96 --workers 2 --manifest "$DATA/manifest.csv"

# 2. meta-learning, FT variant (L_MCH on). The first 2,000 steps with the paper's optimiser settings (Adam
#    5e-5 / 2e-4); reconstruction then improved too slowly for a CPU budget, so the rest runs with the
#    generator's learning rate at 2e-4 (the same as D's); it stops after SECONDS_LIMIT seconds of training
$TH train --preset sample --data runs/data_train_128 --out "$RUN" --steps 2000 --set train.num_workers=1
$TH train --data runs/data_train_128 --out "$RUN" --steps 12000 --time-limit "$SECONDS_LIMIT" \
    --set train.lr_generator=2e-4 --set train.num_workers=1

# 3. ship: fp16 copy of the model directory inside the package, plus the run's curves and a sample grid
.venv/bin/python scripts/export_model.py "$RUN/model" src/talking_heads/assets/sample_model

# 4. the model card's numbers: the paper's protocol on the test split (reduced to fit a CPU: see the card)
#    one clip per test identity (10), T = 1 and 8, 16 hold-out frames each, FT with the paper's 40 epochs
$TH evaluate --model "$RUN/model" --data runs/data_test_128 --out "$RUN/eval" --shots 1 8 --holdout 16 \
    --per-identity 1 --epochs 40 --cross --threads 2
