"""stack: a tower of equal cubes on a pedestal that stands or topples depending on its offsets.

Block k (bottom first) sits centred at x_k = offsets[0] + ... + offsets[k] (the pedestal is centred
at x = 0 and has the blocks' footprint). Closed form (centre-of-mass criterion, equal masses): the
tower stands iff for every support s (the pedestal, then every block but the top one) the centre of
mass of the blocks above s lies over s's top face, |mean(x_j, j > s) - x_s| < size / 2.
`stability_margin` returns the smallest slack of those inequalities as a fraction of size / 2
(> 0: stands, < 0: topples).
"""

from __future__ import annotations

import numpy as np

from sim.params import Param, ParamError, ParamSpace
from sim.scenes.base import Scene, SceneFamily, mjcf, rgba

RESTITUTION = 0.2  # wooden blocks: a dull knock
MAX_OFFSET = 0.7  # |offset| / size a training tower may have (drawn offsets stay inside)
MIN_MARGIN = 0.1  # drawn towers keep |stability margin| >= this: clearly standing or clearly toppling


def block_centres(offsets: list[float]) -> np.ndarray:
    """(n,) x of each block's centre, bottom first (the pedestal is at x = 0)."""
    return np.cumsum(np.asarray(offsets, float))


def stability_margin(offsets: list[float], size: float) -> float:
    """Smallest slack of the centre-of-mass criterion, in units of size / 2: > 0 stands, < 0 topples."""
    x = block_centres(offsets)
    supports = np.concatenate([[0.0], x[:-1]])  # the pedestal, then blocks 0..n-2
    slack = [size / 2 - abs(x[s:].mean() - supports[s]) for s in range(len(x))]
    return float(min(slack) / (size / 2))


def stands(offsets: list[float], size: float) -> bool:
    """The centre-of-mass prediction: True if the tower stands."""
    return stability_margin(offsets, size) > 0


class Stack(SceneFamily):
    name = "stack"
    seconds = 3.0
    params = ParamSpace(
        (
            Param("num_blocks", "number of stacked cubes", "int", valid=(1, 10), train=(2, 5), ood=(6, 7)),
            Param("size", "cube edge, m", valid=(0.0, 0.5), train=(0.06, 0.1), ood=(0.11, 0.14), exclusive_low=True),
            Param("offsets", "each block's shift along x relative to the one below (bottom block: relative to "
                  "the pedestal), m; drawn so that about half the towers stand", "floats", valid=(-0.5, 0.5),
                  train=(-0.07, 0.07), ood=(-0.1, 0.1), length_from="num_blocks"),
            Param("mass", "mass of each block, kg", valid=(0.0, 100.0), train=(0.1, 0.5), ood=(0.6, 1.0),
                  exclusive_low=True),
            Param("friction", "Coulomb friction coefficient between blocks", valid=(0.0, 5.0), train=(0.5, 0.9),
                  ood=[(0.3, 0.45), (1.0, 1.3)]),
        ),
        family="stack",
    )

    def realize(self, given: dict | None, rng: np.random.Generator, split: str = "train") -> dict:
        values = self.params.resolve(given, rng, split)
        if "offsets" not in (given or {}):
            values["offsets"] = self.draw_offsets(values["num_blocks"], values["size"], rng)
        self.check(values)
        return values

    @staticmethod
    def draw_offsets(n: int, size: float, rng: np.random.Generator) -> list[float]:
        """Offsets for a tower that stands or topples with probability 1/2 each, clearly so."""
        want_standing = bool(rng.integers(2))
        for _ in range(1000):
            # topplers come mostly from one large shift; standers from small ones
            scale = rng.uniform(0.05, MAX_OFFSET)
            fractions = rng.uniform(-scale, scale, n)
            offsets = [float(f * size) for f in fractions]
            margin = stability_margin(offsets, size)
            if abs(margin) >= MIN_MARGIN and (margin > 0) == want_standing:
                return offsets
        return [0.0] * n if want_standing else [0.0] * (n - 1) + [0.8 * size]  # pragma: no cover

    def check(self, p: dict) -> None:
        for k, offset in enumerate(p["offsets"]):
            if abs(offset) >= p["size"]:
                raise ParamError(
                    f"parameter 'offsets': got {offset!r} for block {k}; allowed: |offset| < size = "
                    f"{p['size']:g} m (each block must rest on the one below it)"
                )

    def build(self, p: dict) -> Scene:
        size, n = p["size"], p["num_blocks"]
        h = size / 2
        pedestal = 0.1  # m, height of the pedestal the tower stands on
        x = block_centres(p["offsets"])
        bodies = [
            f'<geom name="pedestal" type="box" size="{h:.6g} {h:.6g} {pedestal / 2:.6g}" '
            f'pos="0 0 {pedestal / 2:.6g}" rgba="0.35 0.35 0.38 1"/>'
        ]
        for k in range(n):
            z = pedestal + size * k + h
            bodies.append(
                f'<body name="block{k}" pos="{x[k]:.6g} 0 {z:.6g}"><freejoint name="block{k}"/>'
                f'<geom name="block{k}" type="box" size="{h:.6g} {h:.6g} {h:.6g}" mass="{p["mass"]:.6g}" '
                f'rgba="{rgba(k)}"/></body>'
            )
        top = pedestal + size * n
        # the camera frames the tower and the floor around it, where toppled blocks land
        reach = max(top, 0.25)
        eye = (0.0, -1.8 * reach, 0.9 * reach)
        target = (0.0, 0.0, 0.47 * reach)
        return Scene(
            mjcf=mjcf("\n".join(bodies), camera_eye=eye, camera_target=target, restitution=RESTITUTION,
                      friction=p["friction"]),
            tracked=[f"block{k}" for k in range(n)],
            sounds={f"block{k}": (size, RESTITUTION) for k in range(n)},
        )

    def caption(self, p: dict) -> str:
        shifts = ", ".join(f"{o * 100:+.1f}" for o in p["offsets"])
        return (
            f"A tower of {p['num_blocks']} cubes of {p['size'] * 100:.0f} cm on a pedestal, each shifted "
            f"sideways by {shifts} cm from the one below; each block weighs {p['mass']:.2f} kg and the "
            f"friction between blocks is {p['friction']:.2f}."
        )


FAMILY = Stack()
