"""Do bodies the simulator keeps at rest stay at rest in a rollout? Held-out episodes per family.

    python benchmarks/rest_drift.py --checkpoint runs/quality/nano/model.safetensors --episodes 20

For held-out episodes (split val, or ood with --split ood; 1.7 s: 4 context frames and a 30-frame = 1.5 s horizon), each
tracked body is "at rest" when the simulator moves it less than REST over the horizon, "moving"
otherwise. For both groups, per family, the model's rollout (temperature 0) and the constant-velocity
baseline (in the same run) are scored by their mean position error over the horizon; for bodies at
rest also the model's mean drift along z at the last frame (negative: it sinks or falls). Constant
velocity is exact for a body at rest, so what the model loses there is drift; what it loses on
moving bodies is dynamics. A second table splits the moving bodies by their tracked index (0 is the
family's primary body: push's paddle, the pendulum's bob, the pour's cup), which tells a driven body's
error from the ones it drives. Prints both tables and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
import worldmodel  # noqa: E402
from worldmodel.baselines import constant_velocity  # noqa: E402

FPS, CONTEXT, HORIZON = 20, 4, 30  # frames/s, frames, frames: 1.5 s predicted
REST = 0.01  # m: a body the simulator moves less than this over the horizon is at rest


def add_gate_options(ap: argparse.ArgumentParser) -> None:
    """The dynamics gate's knobs (`worldmodel.GATE_KNOBS`) as options (--gate-override, --override-reach,
    --free-flight-tolerance, --free-swing, --accel-tolerance, --release-reach), for every benchmark that rolls a checkpoint
    out; default: the checkpoint's."""
    for knob, unit in worldmodel.GATE_KNOBS.items():
        ap.add_argument("--" + knob.replace("_", "-"), type=float, default=None, help=f"the model's {knob} ({unit}; default: the checkpoint's)")


def load_model(args) -> tuple[torch.nn.Module, dict]:
    """The checkpoint with `add_gate_options`' knobs applied, and those knobs' values for a summary."""
    model = worldmodel.load(args.checkpoint, **{knob: getattr(args, knob) for knob in worldmodel.GATE_KNOBS})
    return model, {knob: getattr(model.cfg, knob) for knob in worldmodel.GATE_KNOBS}


def body_errors(model, episode) -> list[tuple[bool, float, float, float, int]]:
    """Per tracked body the model predicts (the first n_max_objects): (at rest, model error m,
    constant-velocity error m (both mean over the horizon), the model's z drift at the last frame m,
    its tracked index)."""
    with torch.no_grad():
        rolled = model.rollout(episode, context=CONTEXT, horizon=HORIZON, samples=1, temperature=0.0)[0].episode
    pred = rolled.positions[CONTEXT : CONTEXT + HORIZON]  # (H, n, 3): the first n_max_objects bodies
    n = pred.shape[1]
    truth = episode.positions[CONTEXT : CONTEXT + HORIZON, :n]
    cv = constant_velocity(episode, CONTEXT, HORIZON).positions[CONTEXT:, :n]
    moved = np.linalg.norm(truth - episode.positions[CONTEXT - 1, :n], axis=-1).max(0)  # (n,) m
    err = lambda p: np.linalg.norm(p - truth, axis=-1).mean(0)  # noqa: E731  (n,) m, mean over the horizon
    drift_z = pred[-1, :, 2] - truth[-1, :, 2]
    return list(zip(moved < REST, err(pred), err(cv), drift_z, range(n)))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--episodes", type=int, default=20, help="held-out episodes per family")
    ap.add_argument("--split", default="val", choices=("val", "ood"), help="the parameter ranges: in distribution (val) or out of it (ood)")
    ap.add_argument("--seed", type=int, default=300, help="seed of each family's first held-out episode")
    ap.add_argument("--families", nargs="*", default=list(sim.SCENES), help="scene families (default: all)")
    add_gate_options(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model, gate = load_model(args)
    rows = {}
    print(f"position error over a {HORIZON / FPS:.1f} s rollout, m: bodies the simulator keeps at rest (< {REST} m) and moving ones")
    print(f"{'family':12s}{'at rest':>9s}{'model':>9s}{'const v':>9s}{'z drift':>9s}{'moving':>9s}{'model':>9s}{'const v':>9s}")
    for family in args.families:
        bodies = [b for i in range(args.episodes) for b in body_errors(model, sim.simulate(family, seed=args.seed + i, seconds=(CONTEXT + HORIZON) / FPS, fps=FPS, split=args.split))]
        rest = np.array([b[1:4] for b in bodies if b[0]]).reshape(-1, 3)
        moving = np.array([b[1:3] for b in bodies if not b[0]]).reshape(-1, 2)
        mean = lambda a, j: float(a[:, j].mean()) if len(a) else None  # noqa: E731
        rows[family] = {"rest_bodies": len(rest), "rest_model": mean(rest, 0), "rest_cv": mean(rest, 1), "rest_drift_z": mean(rest, 2),
                        "moving_bodies": len(moving), "moving_model": mean(moving, 0), "moving_cv": mean(moving, 1)}
        r = rows[family]
        by_index = {}  # tracked index -> [(model, const v) error of each moving body]
        for b in bodies:
            if not b[0]:
                by_index.setdefault(b[4], []).append(b[1:3])
        r["moving_by_index"] = {i: [len(errs), *np.mean(errs, axis=0).tolist()] for i, errs in sorted(by_index.items())}
        cell = lambda x: f"{x:9.4f}" if x is not None else f"{'-':>9s}"  # noqa: E731
        print(f"{family:12s}{r['rest_bodies']:9d}{cell(r['rest_model'])}{cell(r['rest_cv'])}{cell(r['rest_drift_z'])}"
              f"{r['moving_bodies']:9d}{cell(r['moving_model'])}{cell(r['moving_cv'])}")
    print("\nmoving bodies by tracked index: count, model error m, constant-velocity error m")
    for family, r in rows.items():
        print(f"{family:12s}" + "".join(f"  [{i}] {c:3d} {m:7.4f} {v:7.4f}" for i, (c, m, v) in r["moving_by_index"].items()))
    summary = {"checkpoint": args.checkpoint, "split": args.split, **gate, "episodes_per_family": args.episodes, "rest_m": REST, "families": rows}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
