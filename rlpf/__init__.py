"""physfusion.rlpf: RL from physical feedback. The simulator scores the world model's predicted
trajectories, and group-relative policy optimisation fine-tunes the model where it disagrees.

    import gymnasium as gym, rlpf
    env = gym.make("physfusion/Query-v0")                   # one episode = one physical query
    queries = rlpf.make_queries(8, split="val", seed=0, context=4, horizon=16)
    rollouts, actions = rlpf.model_actions(model, queries[0], samples=4, temperature=1.0, seed=0)
    rlpf.evaluate(model, queries, samples=2, temperature=1.0, seed=0, long_horizon_s=1.5,
                  weights=rlpf.DEFAULT_WEIGHTS, tolerance=0.05)
    targets, valid = rlpf.simulator_next_states(queries[0], states, n_max=8)  # physics from a rollout's own states

The command `physfusion-rlpf` (rlpf/cli.py) runs the fine-tuning (rlpf/finetune.py).
"""

import gymnasium as gym

from rlpf.buffer import QueryBuffer
from rlpf.env import QueryEnv, observe
from rlpf.evaluate import evaluate
from rlpf.grpo import clipped_surrogate, group_advantages, group_loss, per_value_logprob
from rlpf.policy import model_actions, rollout_action
from rlpf.queries import FAMILIES, Query, make_queries
from rlpf.resim import simulator_next_states
from rlpf.rewards import ANSWER_DIM, DEFAULT_WEIGHTS, TERMS, Reference, Score, finite_difference_velocities, reference, score, simulated_action

ENV_ID = "physfusion/Query-v0"
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="rlpf.env:QueryEnv")

__all__ = [
    "ANSWER_DIM",
    "DEFAULT_WEIGHTS",
    "ENV_ID",
    "FAMILIES",
    "TERMS",
    "Query",
    "QueryBuffer",
    "QueryEnv",
    "Reference",
    "Score",
    "clipped_surrogate",
    "evaluate",
    "finite_difference_velocities",
    "group_advantages",
    "group_loss",
    "make_queries",
    "model_actions",
    "observe",
    "per_value_logprob",
    "reference",
    "rollout_action",
    "score",
    "simulated_action",
    "simulator_next_states",
]
