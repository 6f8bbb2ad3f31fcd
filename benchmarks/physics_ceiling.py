"""Where does a rollout lose against the simulator: the learnt body properties, or the learnt corrections?

    python benchmarks/physics_ceiling.py --checkpoint runs/quality/nano/model.safetensors --episodes 10
    python benchmarks/physics_ceiling.py --checkpoint ... --families collision drop --splits ood

For held-out episodes per family (simulated here, 1.7 s: 4 context frames and a 30-frame = 1.5 s
horizon; split val and ood), the model's rollout (temperature 0) is scored by its position error,
mean over the tracked bodies and the horizon, in four variants, with constant velocity in the same
run for reference:
- `model`: as trained;
- `prior`: the dynamics gate keeps the prior's step everywhere: constant acceleration at the
  context's steady change plus the closed-form contact impulses, from the learnt body properties;
- `sim props`: as trained, but with each body's radius, mass, restitution and friction from the simulator
  where the episode states them (`sim.body_properties`);
- `prior+sim`: both: the closed-form physics with the simulator's properties, a ceiling for what
  the contact model alone does (it knows no rolling or sliding friction, spin or resting contact).
Where `prior` beats `model`, the learnt corrections hurt; where `sim props` beats `model`, the learnt
properties do. Prints a table per split and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from contextlib import contextmanager

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
from rest_drift import CONTEXT, FPS, HORIZON, add_gate_options, load_model  # noqa: E402  (4 context frames, 1.5 s predicted at 20 fps)
from worldmodel.baselines import constant_velocity  # noqa: E402
from worldmodel.model import DRIVEN  # noqa: E402
VARIANTS = {"model": (False, False), "prior": (True, False), "sim props": (False, True), "prior+sim": (True, True)}  # (prior only, simulator's properties)


@contextmanager
def variant(model, prior_only: bool, stated: np.ndarray | None):
    """The model with its dynamics gate held at the prior's step (prior_only) and its body
    properties replaced by the simulator's where stated (stated (n, BODY_PROPERTIES) radius m, mass
    kg, restitution, friction, damping 1/s, NaN: keep the learnt one), for the duration of the block."""
    if stated is not None:
        learnt = model.body_properties

        def body_properties(slots, caption=None):
            b = learnt(slots, caption)  # (..., n_max, BODY_COLUMNS) radius, log mass, restitution, friction, damping, driven logit
            n = min(len(stated), b.shape[-2])
            t = torch.as_tensor(stated[:n], dtype=b.dtype)
            known = torch.cat([t[:, :1], t[:, 1:2].log(), t[:, 2:DRIVEN]], dim=-1)
            head = torch.cat([torch.where(known.isfinite(), known, b[..., :n, :DRIVEN]), b[..., :n, DRIVEN:]], dim=-1)
            return torch.cat([head, b[..., n:, :]], dim=-2)

        model.body_properties = body_properties
    if prior_only:
        chosen = model.step_distribution
        model.step_distribution = lambda raw, features, hold=None, reach=None, release=None, swing=None: dataclasses.replace(  # noqa: E731  nothing released
            (d := chosen(raw, features, hold, reach, swing=swing)), keep_logit=torch.full_like(d.keep_logit, 1.0), override=float("inf")
        )
    try:
        yield model
    finally:
        for name in ("body_properties", "step_distribution"):
            model.__dict__.pop(name, None)


def errors(model, episode) -> dict[str, float]:
    """Mean position error m over the tracked bodies and the horizon, per variant and for constant velocity."""
    n = min(episode.states.shape[1], model.cfg.n_max_objects)
    truth = episode.positions[CONTEXT : CONTEXT + HORIZON, :n]
    err = lambda p: float(np.linalg.norm(p[CONTEXT : CONTEXT + HORIZON, :n] - truth, axis=-1).mean())  # noqa: E731
    out = {}
    for name, (prior_only, use_sim) in VARIANTS.items():
        with variant(model, prior_only, sim.body_properties(episode) if use_sim else None), torch.no_grad():
            out[name] = err(model.rollout(episode, context=CONTEXT, horizon=HORIZON, temperature=0.0)[0].episode.positions)
    out["const v"] = err(constant_velocity(episode, CONTEXT, HORIZON).positions)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--episodes", type=int, default=10, help="held-out episodes per family and split")
    ap.add_argument("--seed", type=int, default=300, help="seed of each family's first held-out episode")
    ap.add_argument("--families", nargs="*", default=list(sim.SCENES), help="scene families (default: all)")
    add_gate_options(ap)
    ap.add_argument("--splits", nargs="*", default=["val", "ood"], choices=["val", "ood"])
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model, gate = load_model(args)
    columns = [*VARIANTS, "const v"]
    result = {}
    for split in args.splits:
        print(f"\n{split}: position error over a {HORIZON / FPS:.1f} s rollout, m (mean of {args.episodes} episodes per family)")
        print(f"{'family':12s}" + "".join(f"{c:>11s}" for c in columns))
        rows = {}
        for family in args.families:
            per = [errors(model, sim.simulate(family, seed=args.seed + i, seconds=(CONTEXT + HORIZON) / FPS, fps=FPS, split=split)) for i in range(args.episodes)]
            rows[family] = {c: float(np.mean([p[c] for p in per])) for c in columns}
            print(f"{family:12s}" + "".join(f"{rows[family][c]:11.4f}" for c in columns), flush=True)
        rows["all"] = {c: float(np.mean([r[c] for r in rows.values()])) for c in columns}  # mean over families
        print(f"{'all':12s}" + "".join(f"{rows['all'][c]:11.4f}" for c in columns))
        result[split] = rows
    summary = {"checkpoint": args.checkpoint, **gate, "episodes_per_family": args.episodes, "splits": result}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
