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

The simulator cannot start from bodies inside one another: its soft contacts would push them out at
metres per second within one frame, a target no physics has. So the moved bodies are first pushed
out along the contact normals, deepest contact first, until none is deeper than the simulator's own
deepest contact at that frame (its impacts reach about 1 cm), or PENETRATION_SLACK if that is more
(`Replay.separate`): the target is physics from the nearest state the simulator admits, and a
rollout that sinks into the floor is taught to be at its surface.

Bodies that are not free (hinged, sliding, welded) and bodies beyond n_max stay where the
simulator had them. A frame whose set state the simulator rejects (`sim.UnstableSimulation`) or
whose rollout state is not finite has no target (valid False).
"""

from __future__ import annotations

import mujoco
import numpy as np

import sim
from rlpf.queries import Query

PENETRATION_SLACK = 1e-3  # m: the least depth left in a contact when moved bodies are pushed out
SEPARATION_ROUNDS = 20  # at most this many push-outs per frame


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
        own_depth = -d.contact.dist[: d.ncon].min(initial=0.0)  # m, >= 0: the simulator's own, at this frame
        mujoco.mj_forward(m, d)
        self.separate(n, max(own_depth, PENETRATION_SLACK))
        try:
            self.sim.step()
        except sim.UnstableSimulation:
            return None
        states = self.sim.states()
        return np.concatenate([states[:, 0:3], states[:, 7:10]], axis=-1)

    def separate(self, n: int, slack: float) -> None:
        """Push the first n tracked free bodies out of whatever they penetrate deeper than `slack` m:
        each round moves each such body along the normal of its deepest contact by that contact's
        depth less the slack (half of it where both bodies are moved)."""
        m, d = self.sim.model, self.sim.data
        moved = {b: qadr for i, b, qadr, _ in self.free if i < n}
        for _ in range(SEPARATION_ROUNDS):
            push = {}  # body -> (depth, displacement (3,))
            for c in d.contact[: d.ncon]:
                depth = -c.dist - slack
                if depth <= 0:
                    continue
                b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
                normal = np.asarray(c.frame[:3])  # from geom1 towards geom2
                share = 0.5 if (b1 in moved and b2 in moved) else 1.0
                for body, sign in ((b1, -1.0), (b2, 1.0)):
                    if body in moved and depth > push.get(body, (0.0, None))[0]:
                        push[body] = (depth, sign * share * depth * normal)
            if not push:
                return
            for body, (_, shift) in push.items():
                d.qpos[moved[body] : moved[body] + 3] += shift
            mujoco.mj_forward(m, d)


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
