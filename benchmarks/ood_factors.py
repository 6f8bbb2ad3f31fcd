"""Which out-of-distribution parameter costs the model what: one parameter at a time.

    python benchmarks/ood_factors.py --checkpoint runs/quality-exact/fastnll/model.safetensors --families collision
    python benchmarks/ood_factors.py --checkpoint ... --gate-override 1.0      # the same weights, another gate

For each family, episodes (1.7 s: 4 context frames and a 30-frame = 1.5 s horizon) are drawn with
every parameter in its training range (`train`), then with one parameter at a time drawn from its
OOD range and the others from their training ranges (`sim.realize_params` with that value given;
a per-body list keeps the training sample's length), then with everything OOD (`ood`). Each row
scores the model's rollout (temperature 0) and the constant-velocity baseline on the same episodes
by their mean position error over the horizon (the first n_max_objects bodies), and gives the
model's error as a ratio to its `train` row: the factors the model does not carry out of its
training ranges stand out. Prints a table per family and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
from rest_drift import CONTEXT, FPS, HORIZON, add_gate_options, body_errors, load_model  # noqa: E402  (4 context frames, 1.5 s predicted at 20 fps)

OOD_SEED = 100_000  # offset of the seeds that draw the OOD values


def ood_names(scene: str) -> list[str]:
    """The family's parameters that have an OOD range (or OOD choices)."""
    return [p.name for p in sim.get_family(scene).params.params if p.ood is not None or p.ood_choices]


def factor_params(scene: str, name: str | None, seed: int) -> tuple[dict, str]:
    """The declared parameters of an episode with every one drawn from its training range, except
    `name` drawn from its OOD range (None: none; "ood": all), and the split the family's extras (the
    other objects' places and such) are drawn for."""
    declared = sim.get_family(scene).params
    pick = lambda values: {k: values[k] for k in declared.names()}  # noqa: E731
    if name is None or name == "ood":
        split = "train" if name is None else "ood"
        return pick(sim.realize_params(scene, None, seed, split)), split
    param = declared.by_name[name]
    train = sim.realize_params(scene, None, seed, "train")
    keep_length = {param.length_from: train[param.length_from]} if param.length_from else None
    value = sim.realize_params(scene, keep_length, OOD_SEED + seed, "ood")[name]
    return pick(sim.realize_params(scene, {name: value}, seed, "train")), "train"


def errors(model, scene: str, params: tuple[dict, str], seed: int) -> tuple[float, float]:
    """(model, constant-velocity) mean position error over the horizon and the bodies, m, of the
    episode with params = (declared parameters, split) (`factor_params`), scored as `rest_drift.py`
    scores each body."""
    values, split = params
    episode = sim.simulate(scene, values, seed=seed, seconds=(CONTEXT + HORIZON) / FPS, fps=FPS, split=split)
    bodies = np.array([b[1:3] for b in body_errors(model, episode)])  # (n, 2) model, constant velocity
    return tuple(bodies.mean(0).tolist())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per row")
    ap.add_argument("--seed", type=int, default=500, help="seed of each row's first episode")
    ap.add_argument("--families", nargs="*", default=list(sim.SCENES), help="scene families (default: all)")
    add_gate_options(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model, gate = load_model(args)
    out = {}
    for scene in args.families:
        print(f"\n{scene}: position error over a {HORIZON / FPS:.1f} s rollout, m ({args.episodes} episodes a row)")
        print(f"{'OOD parameter':22s}{'model':>9s}{'const v':>9s}{'model/cv':>10s}{'/ train':>9s}")
        rows = {}
        for name in [None, *ood_names(scene), "ood"]:
            pairs = np.array([errors(model, scene, factor_params(scene, name, args.seed + i), args.seed + i) for i in range(args.episodes)])
            m, cv = pairs.mean(0)
            label = name or "train"
            rows[label] = {"model": float(m), "constant_velocity": float(cv)}
            rows[label]["to_train"] = float(m / rows["train"]["model"])
            print(f"{label:22s}{m:9.4f}{cv:9.4f}{m / cv:10.2f}{rows[label]['to_train']:9.2f}")
        out[scene] = rows
    summary = {"checkpoint": args.checkpoint, **gate, "episodes_per_row": args.episodes, "families": out}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
