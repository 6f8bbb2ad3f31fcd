"""Does each body read its own radius, mass, restitution, friction and damping from the caption?

    python benchmarks/caption_pointer.py --checkpoint runs/quality/nano/model.safetensors --episodes 10

For held-out episodes per family (simulated here, split val and ood), the model's caption pointer
(`WorldModel.read_bodies`) is scored on every property the episode states
(`sim.body_properties`) and a caption number states (`worldmodel.model.pointer_targets`): the attention it
puts on that number (1: all of it), its gate (1: the caption's value is taken whole), and the ratio
of the value it reads to the simulator's (median, over values other than 0). The roll share, which
the caption states by its shape word ("a red box"), is scored as the share each body reads
against the one its shape fixes (`sim.roll_shares`: 2/7 a ball, 1/3 a ramp's cylinder, 1 a body
that slides), by family and stated share. Prints the tables per split and one JSON line.
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
from worldmodel.model import ROLL, pointer_targets  # noqa: E402

FPS, SECONDS = 20, 0.8  # frames/s, s: enough frames for two blocks
FAMILIES = ("collision", "drop", "projectile", "ramp", "push", "stack", "pendulum", "table_fall")  # those stating a property per body
PROPERTIES = ("radius", "mass", "restitution", "friction", "damping")


def pointer_scores(model, episode) -> tuple[list[tuple[int, float, float, float]], list[tuple[float, float]]]:
    """(property index, attention on the stating number, gate, read / stated) per stated property
    of each tracked body, and (stated, read) roll share per body whose shape fixes one, from the
    first block's reading"""
    truth = torch.as_tensor(sim.body_properties(episode), dtype=torch.float32)
    batch = worldmodel.collate([episode], model.cfg)
    read = {}
    learnt = model.read_bodies

    def spy(slots, caption=None):
        read["out"] = learnt(slots, caption)
        return read["out"]

    model.read_bodies = spy
    try:
        with torch.no_grad():
            model(batch)
    finally:
        del model.read_bodies
    bodies, pointer = read["out"]
    N = pointer.gate_logit.shape[-2]
    P = len(PROPERTIES)
    stated = torch.full((1, N, P), float("nan"))
    stated[0, : min(N, len(truth))] = truth[:N]
    match, found = pointer_targets(pointer.token_value, stated)  # (1, 1, N, P, Lt), (1, 1, N, P)
    on = (pointer.attention[:, :1].exp() * match).sum(-1)[0, 0]  # (N, P)
    gate = torch.sigmoid(pointer.gate_logit[0, 0])  # (N, P)
    value = torch.cat([bodies[0, 0, :, :1], bodies[0, 0, :, 1:2].exp(), bodies[0, 0, :, 2:P]], dim=-1)  # (N, P) radius m, kg, e, mu, damping 1/s
    found = found[0, 0]
    ratio = value / stated[0].where(stated[0] != 0, torch.tensor(float("nan")))  # NaN for a stated 0 (a hinge without damping)
    shares = sim.roll_shares(episode)[:N]
    rolls = [(float(share), float(bodies[0, 0, i, ROLL])) for i, share in enumerate(shares) if np.isfinite(share)]
    return [(k, float(on[i, k]), float(gate[i, k]), float(ratio[i, k])) for i, k in found.nonzero().tolist()], rolls


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a world-model checkpoint (model.safetensors)")
    ap.add_argument("--episodes", type=int, default=10, help="held-out episodes per family and split")
    ap.add_argument("--seed", type=int, default=300, help="seed of each family's first held-out episode")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(sim.SCENES))
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = worldmodel.load(args.checkpoint)
    result = {}
    for split in ("val", "ood"):
        print(f"\n{split}: attention on the stating number / gate / read over stated (median), {args.episodes} episodes per family")
        print(f"{'family':12s}" + "".join(f"{p:>22s}" for p in PROPERTIES))
        rows, rolls = {}, {}
        for family in args.families:
            read = [pointer_scores(model, sim.simulate(family, seed=args.seed + i, seconds=SECONDS, fps=FPS, split=split)) for i in range(args.episodes)]
            scores = [s for episode_scores, _ in read for s in episode_scores]
            for _, episode_rolls in read:
                for stated, learnt in episode_rolls:
                    rolls.setdefault(f"{family} {stated:.3f}", []).append(learnt)
            row = {}
            for k, name in enumerate(PROPERTIES):
                mine = [s[1:] for s in scores if s[0] == k]
                if mine:
                    on, gate, ratio = np.array(mine).T
                    row[name] = {"attention": float(on.mean()), "gate": float(gate.mean()), "read_over_stated": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None, "n": len(mine)}
            rows[family] = row
            cells = "".join(f"{row[p]['attention']:8.2f}{row[p]['gate']:7.2f}{row[p]['read_over_stated'] or float('nan'):7.2f}" if p in row else f"{'-':>22s}" for p in PROPERTIES)
            print(f"{family:12s}{cells}", flush=True)
        print(f"\n{split}: roll share read against the one the shape fixes (median over bodies; min-max)")
        roll_rows = {}
        for key, learnt in rolls.items():
            family, stated = key.split()
            roll_rows[key] = {"stated": float(stated), "read_median": float(np.median(learnt)), "read_min": float(np.min(learnt)), "read_max": float(np.max(learnt)), "n": len(learnt)}
            print(f"{family:12s} stated {float(stated):.3f}  read {np.median(learnt):.3f} ({np.min(learnt):.3f}-{np.max(learnt):.3f}), {len(learnt)} bodies")
        result[split] = {"pointer": rows, "roll_share": roll_rows}
    summary = {"checkpoint": args.checkpoint, "episodes_per_family": args.episodes, "splits": result}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
