#!/usr/bin/env bash
# The main job, end to end on defaults, under demo/ (or the folder given as the first argument):
#   1. a small mixed dataset of every scene family and its preview video;
#   2. a nano world model trained briefly on it, with a side-by-side rollout video;
#   3. a physical query answered and verified, with its report and video;
#   4. a short RL-from-physical-feedback run and its before/after line.
# Every step resumes: rerunning finishes what an interrupted run left, or does nothing.
set -euo pipefail
out=${1:-demo}
export MUJOCO_GL=${MUJOCO_GL:-egl}

physfusion-generate scene=all num_episodes=40 seconds=2.0 seed=0 workers=2 out_dir="$out/data"
physfusion-train data="$out/data" model=nano steps=40 warmup_steps=10 out_dir="$out/nano"
physfusion-verify query="A ball is thrown at 3 m/s at 45 degrees. How far does it land?" \
  checkpoint="$out/nano/model.safetensors" samples=2 max_rethinks=1 out_dir="$out/verify"
physfusion-rlpf checkpoint="$out/nano/model.safetensors" steps=4 train_queries=8 group_size=4 horizon=8 \
  eval_queries=7 eval_samples=1 out_dir="$out/rlpf"
