"""`physfusion-rlpf`: a world-model checkpoint -> an RL-fine-tuned checkpoint and a before/after
report on held-out queries (a Hydra app; options in configs/rlpf.yaml).

    physfusion-rlpf checkpoint=runs/nano/model.safetensors steps=200 out_dir=runs/rlpf
    physfusion-rlpf checkpoint=runs/nano/model.safetensors steps=200 out_dir=runs/sft baseline=sft

Output folder (the layout of `physfusion-train`):
    out_dir/model.safetensors          the latest fine-tuned weights: the summary's "checkpoint"
    out_dir/checkpoints/step-000025/   model.safetensors, optimizer.pt (optimiser and RNG states),
                                       state.json (step, run, buffer priorities, totals)
    out_dir/run.json                   the options that define the run (and the starting checkpoint's hash)
    out_dir/tb/                        TensorBoard: reward and its terms, KL to the start, frame NLL
                                       (pixel fidelity), rollout PSNR, disagreement and violation
                                       rates, skipped groups, lr, gradient norm
    out_dir/report.json                the summary below

Rerunning the same command resumes from the last checkpoint and ends with the weights an
uninterrupted run gives. A progress bar goes to stderr; the last stdout line is a JSON summary:
checkpoint, baseline, steps, simulator_episodes, groups, skipped_groups, and `before` / `after`
(`rlpf.evaluate`: disagreement_rate, disagreement_by_family, answer_miss_by_family, violation_rate,
position_error, position_error_long, psnr, reward). Bad input exits with status 2 and a one-line
message naming the parameter, the value and what is allowed, before anything is written.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError

from rlpf.queries import FAMILIES
from rlpf.rewards import TERMS
from sim.params import ParamError
from worldmodel.config import GATE_KNOBS, knob_error
from worldmodel.train import TrainError


class ConfigError(ValueError):
    """Bad input: exit status 2 with this one-line message."""


INTEGERS = {  # option -> least value
    "steps": 1, "seed": 0, "train_queries": 1, "eval_queries": 1, "context": 1, "horizon": 2, "group_size": 2,
    "queries_per_step": 1, "warmup_steps": 0, "ppo_epochs": 1, "eval_samples": 1, "ckpt_every": 1,
    "keep_checkpoints": 1, "log_every": 1,
}
NUMBERS = {  # option -> (least value, whether the least value itself is allowed)
    "temperature": (0.0, False), "lr": (0.0, False), "min_lr": (0.0, True), "weight_decay": (0.0, True),
    "grad_clip": (0.0, True), "spread_lr": (0.0, True), "spread_noise": (0.0, False), "beta": (0.0, True), "step_kl_resolution": (0.0, True), "pixel_weight": (0.0, True), "state_weight": (0.0, True), "rollout_state_weight": (0.0, True),
    "min_reward_std": (0.0, True), "answer_tolerance": (0.0, True), "buffer_alpha": (0.0, True),
    "buffer_floor": (0.0, False), "eval_temperature": (0.0, True), "long_horizon_s": (0.0, False),
}
BASELINES = {None: "rlpf", "rlpf": "rlpf", "sft": "sft"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_options(cfg: DictConfig) -> dict:
    """Every option checked and resolved (paths absolute, baseline named); raises ConfigError."""
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise ConfigError("parameter 'checkpoint': missing; allowed: a model.safetensors file or a folder holding one (checkpoint=PATH)")
    opts = OmegaConf.to_container(cfg, resolve=True)

    def bad(name, allowed):
        raise ConfigError(f"parameter {name!r}: got {opts[name]!r}; allowed: {allowed}")

    for name, low in INTEGERS.items():
        if not _is_int(opts[name]) or opts[name] < low:
            bad(name, f"an integer >= {low}")
    for name, (low, inclusive) in NUMBERS.items():
        v = opts[name]
        if not _is_number(v) or v < low or (v == low and not inclusive):
            bad(name, f"a number {'>=' if inclusive else '>'} {low:g}")
    if opts["rollout_state_target"] not in ("truth", "simulator"):
        bad("rollout_state_target", "truth (the simulator's states) or simulator (its next states from the rollout's own)")
    for name in ("hold_spread", "hold_bodies", "learn_frame_spread"):
        if not isinstance(opts[name], bool):
            bad(name, "true or false")
    if opts["policy_reaches"] not in ("all", "spread"):
        bad("policy_reaches", "all (the on-policy terms train every parameter) or spread (only the learnt spreads: needs spread_lr > 0)")
    if opts["policy_reaches"] == "spread" and not opts["spread_lr"]:
        bad("policy_reaches", "all, or spread with spread_lr > 0 (spread_lr=0 holds both spreads, so nothing would learn from the rollouts)")
    if opts["kl_target"] is not None and (not _is_number(opts["kl_target"]) or opts["kl_target"] <= 0):
        bad("kl_target", "null (a fixed beta) or a number > 0 (nats per predicted value)")
    if not _is_number(opts["kl_gain"]) or not 0 < opts["kl_gain"] <= 1:
        bad("kl_gain", "a number in (0, 1]")
    if not opts["clip"] or not _is_number(opts["clip"]) or not 0 < opts["clip"] < 1:
        bad("clip", "a number in (0, 1)")
    if opts["queries_per_step"] > opts["train_queries"]:
        bad("queries_per_step", f"at most train_queries={opts['train_queries']} (queries are drawn without replacement)")
    betas = opts["betas"]
    if not isinstance(betas, list) or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        bad("betas", "two numbers in [0, 1)")
    families = opts["families"]
    if isinstance(families, str):
        families = opts["families"] = [families]
    if not isinstance(families, list) or not families or any(f not in FAMILIES for f in families):
        bad("families", f"a non-empty list drawn from {', '.join(FAMILIES)}")
    weights = opts["reward_weights"]
    if not isinstance(weights, dict) or set(weights) != set(TERMS) or not all(_is_number(w) and w >= 0 for w in weights.values()):
        bad("reward_weights", f"numbers >= 0 for exactly {', '.join(TERMS)}")
    if opts["baseline"] not in BASELINES:
        bad("baseline", "null (RL from physical feedback) or sft (continued supervised training)")
    opts["baseline"] = BASELINES[opts["baseline"]]
    device = str(opts["device"])
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        bad("device", "cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        bad("device", "cpu (no CUDA device is available)")

    path = Path(to_absolute_path(str(opts["checkpoint"])))
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"parameter 'checkpoint': got {str(path)!r}, which is not a checkpoint file; allowed: a model.safetensors file or a folder holding one")
    opts["checkpoint"], opts["out_dir"] = file, Path(to_absolute_path(str(opts["out_dir"])))
    import worldmodel

    try:
        model_cfg = worldmodel.load(file).cfg
    except (ValueError, OSError, RuntimeError, SafetensorError) as err:
        raise ConfigError(f"parameter 'checkpoint': {str(file)!r} cannot be loaded ({str(err).strip().splitlines()[0]}); allowed: a file written by WorldModel.save") from None
    knobs = knob_error({knob: opts[knob] for knob in GATE_KNOBS})
    if knobs:
        raise ConfigError(knobs)
    if opts["context"] < model_cfg.tubelet_t:
        bad("context", f"an integer >= the model's tubelet_t={model_cfg.tubelet_t} (its first time block is given, not predicted)")
    return opts


@hydra.main(config_path="pkg://configs", config_name="rlpf", version_base="1.3")
def _app(cfg: DictConfig) -> dict:
    from rlpf.finetune import finetune

    try:
        summary = finetune(check_options(cfg))
    except (ConfigError, TrainError, ParamError) as err:
        print(f"physfusion-rlpf: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
