"""Do the intrinsic checks separate valid simulator episodes from physically corrupted ones?

    python benchmarks/verifier_checks.py --episodes 6

For every scene family it simulates valid episodes (20 fps, states only, train and ood splits
alternating) on two disjoint seed sets: a calibration set and a held-out set. Thresholds are
calibrated on the calibration set's valid episodes only (per check: the largest value seen, times
--margin, never below a small floor; the library's defaults, verifier.checks.THRESHOLDS, were set
from such a calibration); on the held-out set, every valid episode and one
corrupted copy per corruption kind (verifier/corrupt.py) are scored with those thresholds.
Reported: ROC-AUC of `CheckReport.score` (valid vs corrupted), the false-alarm rate of
`.consistent` on valid episodes and the detection rate on corrupted ones, per family and per
corruption, with the library defaults and with the calibrated thresholds. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

import sim  # noqa: E402
from verifier.checks import THRESHOLDS, check_trajectory, measure  # noqa: E402
from verifier.corrupt import KINDS, corrupt  # noqa: E402


def roc_auc(negatives: list[float], positives: list[float]) -> float:
    """P(score of a corrupted episode > score of a valid one), ties counting half."""
    neg, pos = np.asarray(negatives)[:, None], np.asarray(positives)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (neg.size * pos.size))


def episodes(seeds: range, fps: float) -> list[sim.Episode]:
    out = []
    for family in sim.SCENES:
        for seed in seeds:
            out.append(sim.simulate(family, seed=seed, fps=fps, render=False, split="train" if seed % 2 == 0 else "ood"))
    return out


# the smallest threshold calibration may set per check (a law no valid episode strains at all still
# needs room for numerical noise)
FLOOR = {"permanence": 0.5, "continuity": 0.005, "gravity": 0.02, "energy": 0.01, "momentum": 0.005,
         "penetration": 0.1, "constraint": 0.005}


def calibrate(valid: list[sim.Episode], margin: float) -> dict[str, float]:
    worst: dict[str, float] = {}
    for e in valid:
        for name, value in measure(e).items():
            worst[name] = max(worst.get(name, 0.0), value)
    return {name: max(margin * worst.get(name, 0.0), FLOOR[name]) for name in THRESHOLDS}


def evaluate(valid, corrupted, thresholds) -> dict:
    """valid: episodes; corrupted: (kind, episode) pairs."""
    v = [check_trajectory(e, thresholds) for e in valid]
    c = [(kind, check_trajectory(e, thresholds)) for kind, e in corrupted]
    out = {
        "auc": roc_auc([r.score for r in v], [r.score for _, r in c]),
        "false_alarms": float(np.mean([not r.consistent for r in v])),
        "detected": float(np.mean([not r.consistent for _, r in c])),
        "by_kind": {kind: float(np.mean([not r.consistent for k, r in c if k == kind])) for kind in KINDS},
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=6, help="valid episodes per family in each seed set")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--margin", type=float, default=1.5, help="calibrated threshold = margin x worst valid value")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = args.episodes
    print(f"simulating {2 * n} episodes per family ...", file=sys.stderr)
    calibration = episodes(range(1000, 1000 + n), args.fps)
    held_out = episodes(range(2000, 2000 + n), args.fps)
    rng = np.random.default_rng(args.seed)
    corrupted = [(kind, e, corrupt(e, kind, rng)) for e in held_out for kind in KINDS]
    calibrated = calibrate(calibration, args.margin)

    results = {"default": evaluate(held_out, [(k, c) for k, _, c in corrupted], THRESHOLDS),
               "calibrated": evaluate(held_out, [(k, c) for k, _, c in corrupted], calibrated)}
    per_family = {}
    for family in sim.SCENES:
        valid = [e for e in held_out if e.scene == family]
        bad = [(k, c) for k, e, c in corrupted if e.scene == family]
        per_family[family] = evaluate(valid, bad, THRESHOLDS)

    print(f"held-out: {len(held_out)} valid episodes, {len(corrupted)} corrupted ({len(KINDS)} kinds); "
          f"calibrated on {len(calibration)} other valid episodes")
    print(f"{'':22s}{'ROC-AUC':>9s}{'false alarms':>14s}{'detected':>10s}")
    for name, r in results.items():
        print(f"{name + ' thresholds':22s}{r['auc']:9.3f}{r['false_alarms']:14.1%}{r['detected']:10.1%}")
    print("\nper family (default thresholds)")
    for family, r in per_family.items():
        print(f"  {family:20s}{r['auc']:9.3f}{r['false_alarms']:14.1%}{r['detected']:10.1%}")
    print("\ndetection rate per corruption (default thresholds)")
    for kind in KINDS:
        print(f"  {kind:20s}{results['default']['by_kind'][kind]:9.1%}")
    print("\ncalibrated thresholds: " + ", ".join(f"{k}={v:.3g}" for k, v in calibrated.items()))
    summary = {
        "episodes_valid": len(held_out),
        "episodes_corrupted": len(corrupted),
        "auc": results["default"]["auc"],
        "false_alarms": results["default"]["false_alarms"],
        "detected": results["default"]["detected"],
        "auc_calibrated": results["calibrated"]["auc"],
        "false_alarms_calibrated": results["calibrated"]["false_alarms"],
        "calibrated_thresholds": calibrated,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
