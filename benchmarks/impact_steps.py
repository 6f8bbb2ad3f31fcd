"""Does the dynamics head step through an impact, or hedge before it? Teacher-forced held-out impacts.

    python benchmarks/impact_steps.py --checkpoint runs/quality/nano/model.safetensors --episodes 20
    python benchmarks/impact_steps.py --checkpoint ... --family collision   # two balls hitting head-on or glancing
    python benchmarks/impact_steps.py --checkpoint ... --family collision --split ood   # faster, bigger, heavier balls

For held-out episodes (--split val, or ood for the out-of-distribution ranges; 1.7 s) of single-object drops (`--family drop`) or two-ball
collisions (`--family collision`), the model is teacher-forced on the simulated clip, and its
dynamics step means are set against the true steps (the simulator's, in the same run) around body
0's first impact: its velocity step r_v in step units (ModelConfig.step_vel_scale m/s; free fall at
20 fps is -0.98 vertically), projected on the direction of the impact's velocity jump (for a drop,
up; for a hit, along the impulse). The impact frame is the first whose true |r_v| jump exceeds
IMPACT. Prints the mean over episodes of the true and predicted projections from LEAD frames before
the impact to the impact frame, the jump ratio (the predicted rise at the impact frame over the true
one: 1 is a sharp impact, 0 none) and the early rise (how far the predicted steps before the impact
sit above the true ones: a model that decelerates before an impact hedges), and the radius and
restitution the model learnt for body 0 (`WorldModel.body_properties`, which its contact features and
impulses use) against the simulator's (half its `size`; its `restitution`), then one JSON line.
Also the free-fall gain: over body 0's frames before its first impact whose true step is gravity's
alone, the predicted vertical step over the true one (1: the head keeps gravity; the prior alone
gives 1 exactly), and the share of them on which the gate kept the prior's step.
Steps here are whole steps: the head's plus the frame's closed-form contact impulse.
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
from worldmodel.tether import GRAVITY  # noqa: E402

IMPACT = 1.0  # step units (0.5 m/s): a true jump of r_v larger than this is an impact (free fall and gliding change it by < 0.1 per frame)
LEAD = 3  # frames before the impact shown
SCENES = {"drop": {"num_objects": 1}, "collision": {"num_balls": 2}}  # family -> fixed parameters


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--family", choices=sorted(SCENES), default="drop", help="the impacts: a drop's bounce or two balls' hit")
    ap.add_argument("--split", choices=("val", "ood"), default="val", help="parameter ranges of the held-out episodes")
    ap.add_argument("--episodes", type=int, default=20, help="held-out episodes simulated (those without an impact are skipped)")
    ap.add_argument("--seed", type=int, default=200, help="seed of the first held-out episode")
    args = ap.parse_args(argv)
    model = worldmodel.load(args.checkpoint)
    gravity = GRAVITY[2] / model.cfg.fps / model.cfg.step_vel_scale  # free fall's r_v along z (step units)
    true_rows, pred_rows, props, fall_gain, fall_kept = [], [], [], [], []
    for i in range(args.episodes):
        episode = sim.simulate(args.family, SCENES[args.family], seed=args.seed + i, seconds=1.7, split=args.split)
        with torch.no_grad():
            out = model(worldmodel.collate([episode], model.cfg))
        impulse = out["step_impulse"][0, :, 0, 3:]  # the closed-form contact part of each step (both sides)
        true, pred = (out["step_drawn"][0, :, 0, 3:] + impulse).numpy(), (out["steps"].mean[0, :, 0, 3:] + impulse).numpy()  # (T - tt, 3) r_v of body 0
        radius, restitution = out["bodies"][0, :, 0, 0].mean(), out["bodies"][0, :, 0, 2].mean()  # body 0's learnt properties
        props.append((float(radius), episode.params["size"] / 2, float(restitution), episode.params["restitution"]))  # (learnt, true) m, (learnt, true)
        jumps = np.linalg.norm(np.diff(true, axis=0), axis=-1)  # (T - tt - 1,) between frames k and k + 1
        impacts = np.flatnonzero(jumps > IMPACT) + 1
        falling = np.flatnonzero(np.abs(true - [0.0, 0.0, gravity]).max(-1) < 0.05)
        falling = falling[falling < (impacts[0] if len(impacts) else len(true))]
        fall_gain += (pred[falling, 2] / true[falling, 2]).tolist()
        fall_kept += out["steps"].keep[0, falling, 0, 0].float().tolist()
        if not len(impacts) or impacts[0] < LEAD:
            continue
        k = impacts[0]
        direction = (true[k] - true[k - 1]) / np.linalg.norm(true[k] - true[k - 1])
        true_rows.append(true[k - LEAD : k + 1] @ direction)
        pred_rows.append(pred[k - LEAD : k + 1] @ direction)
    if not true_rows:
        raise SystemExit(f"impact_steps: none of the {args.episodes} episodes had an impact after frame {LEAD}; simulate more (--episodes)")
    true_r, pred_r = np.array(true_rows), np.array(pred_rows)  # (episodes, LEAD + 1)
    jump = float(np.mean((pred_r[:, -1] - true_r[:, -2]) / (true_r[:, -1] - true_r[:, -2])))
    early = float(np.mean(pred_r[:, :-1] - true_r[:, :-1]))
    leads = [f"-{LEAD - j}" if j < LEAD else "impact" for j in range(LEAD + 1)]
    print(f"velocity steps r_v of body 0 around its first impact along the impulse, {len(true_r)} held-out {args.family} episodes, split {args.split} (step units)")
    print(f"{'frame':10s}" + "".join(f"{x:>9s}" for x in leads))
    print(f"{'true':10s}" + "".join(f"{x:9.2f}" for x in true_r.mean(0)))
    print(f"{'model':10s}" + "".join(f"{x:9.2f}" for x in pred_r.mean(0)))
    print(f"jump ratio at the impact (1 = sharp): {jump:.2f}; early rise before it (0 = none): {early:+.2f}")
    gain, kept = (float(np.mean(fall_gain)), float(np.mean(fall_kept))) if fall_gain else (None, None)
    if fall_gain:
        print(f"free fall before the first impact ({len(fall_gain)} frames): predicted vertical step / true {gain:.2f} (1 = gravity kept); the gate kept the prior's step on {kept:.0%}")
    learnt, true_radius, learnt_e, true_e = np.array(props).T
    ratio = float(np.mean(learnt / true_radius))
    e_error = float(np.mean(np.abs(learnt_e - true_e)))
    print(f"body 0's learnt radius: {learnt.mean():.3f} m against the simulator's {true_radius.mean():.3f} m (mean ratio {ratio:.2f}, {len(props)} episodes)")
    print(f"body 0's learnt restitution: {learnt_e.mean():.2f} against the simulator's {true_e.mean():.2f} (mean absolute error {e_error:.2f}; "
          f"correlation {np.corrcoef(learnt_e, true_e)[0, 1]:.2f})")
    summary = {"family": args.family, "split": args.split, "episodes": len(true_r), "true": true_r.mean(0).tolist(), "model": pred_r.mean(0).tolist(),
               "jump_ratio": jump, "early_rise": early, "free_fall_gain": gain, "free_fall_kept": kept, "radius_ratio": ratio, "restitution_error": e_error, "checkpoint": args.checkpoint}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
