"""Does re-thinking raise the accuracy of the world model's answers over single-sample answers?

    python benchmarks/verifier_rethink.py --checkpoint runs/nano/model.safetensors --queries 40

A held-out query set (English questions with values drawn from seeds the model never saw, across
the scene families the query language covers) is answered twice by the model, without the
simulator's help: single-sample (the first rollout's answer, unchecked) and re-think (the GenV
loop with oracle=none: rollouts failing the intrinsic checks are dropped, survivors aggregated,
up to --max-rethinks extra rounds; when none ever passes, the least violating half is aggregated and
the answer flagged unverified). Both are scored against the simulator's answer: correct when
within --tolerance (relative, with a small absolute floor per unit) or, for yes/no, equal; no
answer counts as wrong. The two are paired (same queries), so the table ends with the queries only
re-thinking got right against those only the single sample got right, and the two-sided sign test's
p-value of that split (the chance of a split at least this uneven if re-thinking changed nothing).
Prints one table and a last JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

import worldmodel  # noqa: E402
from verifier.answer import agree  # noqa: E402
from verifier.loop import tolerance_for, verify  # noqa: E402
from verifier.oracle import simulate_answer  # noqa: E402
from verifier.query import QueryError, parse_query  # noqa: E402

TEMPLATES = [
    ("drop", lambda r: f"A ball is dropped from {r.uniform(1.0, 1.5):.2f} m. How high is it after {r.uniform(0.2, 0.4):.2f} s?"),
    ("drop", lambda r: f"A ball is let go {r.uniform(0.5, 1.5):.2f} m above the floor. How long until it lands?"),
    ("drop", lambda r: f"A ball with restitution {r.uniform(0.5, 0.8):.2f} falls from {r.uniform(0.6, 1.4):.2f} m. "
                       f"How high does it rebound?"),
    ("projectile", lambda r: f"A ball is launched at {r.uniform(2, 3.5):.2f} m/s at {r.uniform(30, 60):.0f} degrees. "
                             f"What is its range?"),
    ("ramp", lambda r: f"A box slides down a {r.uniform(20, 35):.0f} degree incline with friction {r.uniform(0.1, 0.3):.2f}. "
                       f"What is its speed after {r.uniform(0.3, 0.6):.2f} s?"),
    ("pendulum", lambda r: f"A pendulum {r.uniform(0.3, 0.8):.2f} m long swings from {r.uniform(10, 40):.0f} degrees. "
                           f"What is its period?"),
    ("collision", lambda r: f"A {r.uniform(0.5, 2):.2f} kg ball moving at {r.uniform(0.8, 1.5):.2f} m/s strikes a "
                            f"resting {r.uniform(0.5, 2):.2f} kg ball, restitution {r.uniform(0.5, 1):.2f}. "
                            f"What are the velocities afterwards?"),
    ("table_fall", lambda r: f"A cup slides off a {r.uniform(0.5, 0.9):.2f} m table at {r.uniform(0.8, 1.6):.2f} m/s. "
                             f"How far from the table does it land?"),
    ("stack", lambda r: f"Does a tower of {r.integers(2, 5)} blocks of 8 cm, each shifted {r.uniform(0, 3):.1f} cm from "
                        f"the one below, topple?"),
]


def held_out_queries(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [TEMPLATES[i % len(TEMPLATES)][1](rng) for i in range(n)]


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign-test p-value of `wins` against `losses` (ties dropped) under p = 1/2."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--queries", type=int, default=27, help="held-out queries (cycling through the templates)")
    ap.add_argument("--samples", type=int, default=8, help="rollouts per round")
    ap.add_argument("--max-rethinks", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=12345, help="seed of the held-out query values")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    model = worldmodel.load(args.checkpoint, device=args.device)
    rows = []
    for i, text in enumerate(held_out_queries(args.queries, args.seed)):
        print(f"[{i + 1}/{args.queries}] {text}", file=sys.stderr, flush=True)
        try:
            query = parse_query(text)
        except QueryError as err:
            print(f"  skipped: {err}", file=sys.stderr)
            continue
        truth, _ = simulate_answer(query)
        result = verify(query, model, oracle="none", samples=args.samples, max_rethinks=args.max_rethinks, seed=i)
        tol = tolerance_for(truth, args.tolerance)
        single = result.single_sample is not None and agree(result.single_sample, truth, *tol)
        rethink = result.answer is not None and agree(result.answer, truth, *tol)
        rows.append({"scene": query.scene, "single": single, "rethink": rethink, "verdict": result.verdict})
    scenes = sorted({r["scene"] for r in rows})
    print(f"held-out queries: {len(rows)}; {args.samples} samples per round, up to {args.max_rethinks} re-thinks; "
          f"correct = within {args.tolerance:.0%} of the simulator")
    print(f"{'scene':14s}{'queries':>8s}{'single-sample':>15s}{'re-think':>10s}")
    for scene in scenes + ["all"]:
        sub = [r for r in rows if scene in ("all", r["scene"])]
        print(f"{scene:14s}{len(sub):8d}{np.mean([r['single'] for r in sub]):15.1%}{np.mean([r['rethink'] for r in sub]):10.1%}")
    only_rethink = sum(r["rethink"] and not r["single"] for r in rows)
    only_single = sum(r["single"] and not r["rethink"] for r in rows)
    p_value = sign_test(only_rethink, only_single)
    print(f"right only after re-thinking: {only_rethink}; right only single-sample: {only_single}; "
          f"sign test p = {p_value:.2g}")
    summary = {
        "queries": len(rows),
        "only_rethink_correct": only_rethink,
        "only_single_correct": only_single,
        "sign_test_p": p_value,
        "single_sample_accuracy": float(np.mean([r["single"] for r in rows])) if rows else None,
        "rethink_accuracy": float(np.mean([r["rethink"] for r in rows])) if rows else None,
        "answered_after_rethink": float(np.mean([r["verdict"] != "unverified" for r in rows])) if rows else None,
        "checkpoint": args.checkpoint,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
