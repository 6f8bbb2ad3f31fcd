"""A query buffer prioritised by disagreement with the simulator.

    buffer = QueryBuffer(64, alpha=1.0, floor=0.1)
    drawn = buffer.draw(np.random.default_rng([seed, step]), 4)    # 4 distinct query indices
    buffer.update(drawn[0], disagreement=0.75)                      # fraction of its rollouts that disagreed

Query i is drawn with probability proportional to (d_i + floor) ** alpha, d_i its latest
disagreement rate (`rlpf.rewards`: the model's answer against the simulator's), so queries the
model already gets right are drawn less often but never starved. A query not yet seen has d = 1.
alpha = 0 draws uniformly. The state is plain lists (JSON), saved with each checkpoint.
"""

from __future__ import annotations

import numpy as np


class QueryBuffer:
    def __init__(self, size: int, alpha: float = 1.0, floor: float = 0.1):
        if size < 1:
            raise ValueError(f"parameter 'size': got {size!r}; allowed: an integer >= 1")
        self.alpha, self.floor = float(alpha), float(floor)
        self.disagreement = np.ones(size)  # (size,) latest disagreement rate per query, in [0, 1]
        self.draws = np.zeros(size, np.int64)  # (size,) times each query was drawn

    def __len__(self) -> int:
        return len(self.disagreement)

    def probabilities(self) -> np.ndarray:
        """(size,) the probability of each query on a single draw."""
        weight = (self.disagreement + self.floor) ** self.alpha
        return weight / weight.sum()

    def draw(self, rng: np.random.Generator, k: int) -> list[int]:
        """k distinct query indices (k <= size), drawn by priority without replacement."""
        drawn = rng.choice(len(self), size=k, replace=False, p=self.probabilities())
        self.draws[drawn] += 1
        return [int(i) for i in drawn]

    def update(self, index: int, disagreement: float) -> None:
        self.disagreement[index] = float(disagreement)

    def state_dict(self) -> dict:
        return {"disagreement": self.disagreement.tolist(), "draws": self.draws.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if len(state["disagreement"]) != len(self):
            raise ValueError(f"QueryBuffer: a state of {len(state['disagreement'])} queries; allowed: {len(self)}")
        self.disagreement = np.asarray(state["disagreement"], np.float64)
        self.draws = np.asarray(state["draws"], np.int64)
