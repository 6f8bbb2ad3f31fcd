"""The simulator's next state from the model's own: one-step targets for the rollout-state term.

    targets, valid = simulator_next_states(query, rollout_states, n_max)  # (G, T, n_max, 6), (G, T)

Teacher forcing learns one step of physics from the simulator's states; a rollout visits the
model's own. For every predicted frame t the simulator is put back in the state it had at frame
t - 1, the tracked free bodies are moved to where the rollout has them (centre of mass and its
velocity; their orientation and spin stay the simulator's), it is stepped one frame and read: what
physics does from the model's own state. Against the true state at t (`rollout_state_target=truth`)
the model learns to pull a drifted rollout back towards the true trajectory, which from its own
state it can only guess (so it learns the guesses' mean: a bouncing ball hovers at its mean
height); against these targets (`rollout_state_target=simulator`) it learns the dynamics at the
states it visits (DAgger's expert queried at the learner's states, the simulator as the expert).

Bodies that are not free (hinged, sliding, welded) and bodies beyond n_max stay where the
simulator had them. A frame whose set state the simulator rejects (`sim.UnstableSimulation`: a body
moved deep into another) or whose rollout state is not finite has no target (valid False).
"""

from __future__ import annotations

import mujoco
import numpy as np

import sim
from rlpf.queries import Query


class Replay:
    """A query's scene simulated again from its start, keeping the full simulator state of every
    frame, so it can be restarted from any of them."""

    def __init__(self, query: Query):
        ep = query.episode
        self.sim = sim.Simulation(sim.get_family(ep.scene).build(ep.params), ep.fps)
        m, d = self.sim.model, self.sim.data
        self.snapshots = []  # per frame: qpos, qvel, act, warm start, time
        for t in range(len(ep)):
            self.snapshots.append((d.qpos.copy(), d.qvel.copy(), d.act.copy(), d.qacc_warmstart.copy(), d.time))
            if t + 1 < len(ep):
                self.sim.step()
        # the tracked free bodies: (index among the tracked, body id, qpos address, dof address)
        self.free = []
        for i, b in enumerate(self.sim.body_ids):
            j = m.body_jntadr[b]
            if m.body_jntnum[b] == 1 and m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                self.free.append((i, b, m.jnt_qposadr[j], m.jnt_dofadr[j]))

    def restore(self, t: int) -> None:
        m, d = self.sim.model, self.sim.data
        qpos, qvel, act, warm, time = self.snapshots[t]
        d.qpos[:], d.qvel[:], d.act[:], d.qacc_warmstart[:], d.time = qpos, qvel, act, warm, time
        mujoco.mj_forward(m, d)

    def step_from(self, t: int, positions: np.ndarray, velocities: np.ndarray, n: int) -> np.ndarray | None:
        """Frame t's simulator state with the first n tracked free bodies' centres of mass at
        `positions` (n, 3) m moving at `velocities` (n, 3) m/s, stepped one frame -> (n_tracked, 6)
        positions and velocities at frame t + 1 (None: the simulator rejected the state)."""
        self.restore(t)
        m, d = self.sim.model, self.sim.data
        for i, b, qadr, dadr in self.free:
            if i >= n:
                continue
            offset = d.xipos[b] - d.xpos[b]  # world frame: body origin -> centre of mass
            spin = d.xmat[b].reshape(3, 3) @ d.qvel[dadr + 3 : dadr + 6]  # world-frame angular velocity
            d.qpos[qadr : qadr + 3] = positions[i] - offset
            d.qvel[dadr : dadr + 3] = velocities[i] - np.cross(spin, offset)  # the origin's velocity
        mujoco.mj_forward(m, d)
        try:
            self.sim.step()
        except sim.UnstableSimulation:
            return None
        states = self.sim.states()
        return np.concatenate([states[:, 0:3], states[:, 7:10]], axis=-1)


def simulator_next_states(query: Query, rollout_states: np.ndarray, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """rollout_states (G, T, n_max, 6): the rollouts' positions m and velocities m/s (the first
    `query.context` frames the simulator's) -> (targets (G, T, n_max, 6) float32: at each predicted
    frame t the simulator's state one frame after the rollout's state at t - 1, elsewhere the
    simulator's own; valid (G, T) bool: the predicted frames that have a target)."""
    replay = Replay(query)
    truth = query.episode.states
    G, T = rollout_states.shape[:2]
    n = min(truth.shape[1], n_max)
    targets = np.zeros((G, T, n_max, 6), np.float32)
    targets[:, :, :n, :3] = truth[:T, :n, 0:3]
    targets[:, :, :n, 3:] = truth[:T, :n, 7:10]
    valid = np.zeros((G, T), bool)
    for g in range(G):
        for t in range(query.context, T):
            source = rollout_states[g, t - 1, :n]
            if not np.isfinite(source).all():
                continue
            nxt = replay.step_from(t - 1, source[:, :3].astype(np.float64), source[:, 3:].astype(np.float64), n)
            if nxt is not None:
                targets[g, t, :n] = nxt[:n]
                valid[g, t] = True
    return targets, valid
