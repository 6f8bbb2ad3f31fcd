#!/usr/bin/env bash
# The main job, end to end on defaults: a small mixed dataset of every scene family and its preview
# video, under demo/ (or the folder given as the first argument). Rerunning resumes / does nothing.
set -euo pipefail
out=${1:-demo}
export MUJOCO_GL=${MUJOCO_GL:-egl}

physfusion-generate scene=all num_episodes=40 seed=0 workers=2 out_dir="$out/data"
