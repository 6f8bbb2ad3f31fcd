"""Does the dynamics head step through an impact, or hedge before it? Teacher-forced held-out drops.

    python benchmarks/impact_steps.py --checkpoint runs/quality/nano/model.safetensors --episodes 20

For held-out single-object drops (split=val, 1.7 s), the model is teacher-forced on the simulated
clip, and its dynamics step means are set against the true steps (the simulator's, in the same run)
around the first bounce: the vertical velocity step r_v in step units (ModelConfig.step_vel_scale
m/s; free fall at 20 fps is -0.98). The bounce frame is the first whose true r_v exceeds BOUNCE.
Prints the mean over episodes of the true and predicted r_v from LEAD frames before the bounce to
the bounce frame, the jump ratio (the predicted rise at the bounce frame over the true one: 1 is a
sharp bounce, 0 none) and the early rise (how far the predicted steps before the bounce sit above
free fall: a model that decelerates before the impact hedges), then one JSON line.
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

BOUNCE = 5.0  # step units (2.5 m/s): a true r_v above this is an impact
LEAD = 3  # frames before the bounce shown


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--episodes", type=int, default=20, help="held-out drops simulated (those without a bounce are skipped)")
    ap.add_argument("--seed", type=int, default=200, help="seed of the first held-out drop")
    args = ap.parse_args(argv)
    model = worldmodel.load(args.checkpoint)
    true_rows, pred_rows = [], []
    for i in range(args.episodes):
        episode = sim.simulate("drop", {"num_objects": 1}, seed=args.seed + i, seconds=1.7, split="val")
        with torch.no_grad():
            out = model(worldmodel.collate([episode], model.cfg))
        true, pred = out["step_drawn"][0, :, 0, 5].numpy(), out["steps"].mean[0, :, 0, 5].numpy()  # (T - tt,) r_v
        bounces = np.flatnonzero(true > BOUNCE)
        if not len(bounces) or bounces[0] < LEAD:
            continue
        k = bounces[0]
        true_rows.append(true[k - LEAD : k + 1])
        pred_rows.append(pred[k - LEAD : k + 1])
    true_r, pred_r = np.array(true_rows), np.array(pred_rows)  # (episodes, LEAD + 1)
    jump = float(np.mean((pred_r[:, -1] - true_r[:, -2]) / (true_r[:, -1] - true_r[:, -2])))
    early = float(np.mean(pred_r[:, :-1] - true_r[:, :-1]))
    leads = [f"-{LEAD - j}" if j < LEAD else "bounce" for j in range(LEAD + 1)]
    print(f"vertical velocity steps r_v around the first bounce, {len(true_r)} held-out drops (step units; free fall -0.98)")
    print(f"{'frame':10s}" + "".join(f"{x:>9s}" for x in leads))
    print(f"{'true':10s}" + "".join(f"{x:9.2f}" for x in true_r.mean(0)))
    print(f"{'model':10s}" + "".join(f"{x:9.2f}" for x in pred_r.mean(0)))
    print(f"jump ratio at the bounce (1 = sharp): {jump:.2f}; early rise before it (0 = none): {early:+.2f}")
    summary = {"episodes": len(true_r), "true": true_r.mean(0).tolist(), "model": pred_r.mean(0).tolist(),
               "jump_ratio": jump, "early_rise": early, "checkpoint": args.checkpoint}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
