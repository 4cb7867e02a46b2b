#!/usr/bin/env bash
# Reproduce the gaze preview (issue 28): the TPS preview model (src/talking_heads/assets/tps_model) trained on with
# the pupils in its landmark images (data.pupils) and the photo's irises shifted by the driver's gaze
# (model.tps_iris), on ../shared/data's train split preprocessed with iris points. The long run that ships is
# issue 29's; this is the short one that shows the pupils train in.
#
#   bash scripts/train_gaze_model.sh [RUN] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${TALKING_HEADS_DATA:-../shared/data}
RUN=${1:-runs/gaze}
SECONDS_LIMIT=${2:-3000}
TH=.venv/bin/talking-heads
make setup

# 1. landmarks, iris points (data.iris = auto: MediaPipe) and 256 px head crops of every train-split frame
$TH preprocess "$DATA/videos/train" runs/data_train_256 --size 256 --workers 2 --manifest "$DATA/manifest.csv"
$TH preprocess "$DATA/frames" runs/data_train_256 --size 256 --workers 2 --manifest "$DATA/manifest.csv"

# 2. meta-learning from the TPS preview's weights with the gaze settings; resumes when RUN holds a checkpoint
if [ -f "$RUN/training_state.pt" ]; then
    OMP_NUM_THREADS=1 $TH train --data runs/data_train_256 --out "$RUN" --time-limit "$SECONDS_LIMIT"
else
    OMP_NUM_THREADS=1 $TH train --preset sample --set model.generator=tps --set model.tps_iris=true \
        --set data.pupils=true --data runs/data_train_256 --out "$RUN" --steps 40000 \
        --time-limit "$SECONDS_LIMIT" --init-from src/talking_heads/assets/tps_model --set train.num_workers=1 \
        --set train.border_dropout=0.3
fi

# 3. the release copy with the TPS model's rendering settings
$TH export-model "$RUN/model" runs/gaze_model --set inference.max_yaw=15 --set inference.output_size=0

# 4. gaze transfer measured against the TPS preview (docs/gaze.md)
.venv/bin/python scripts/gaze_eval.py runs/gaze_model docs/gaze/eval_trained --frames 48
