"""Tethers (`worldmodel.tether`): found on hinged bodies only, and a pendulum kept on its circle
swings as the simulator's does."""

import numpy as np
import pytest
import torch

import sim
from worldmodel.tether import GRAVITY, TETHER_FRAMES, Tether, fit_tethers, gravity_swing, tangential_draw, tether_features, tether_step, tether_tangent

DT = 1 / 20


def states(episode: sim.Episode, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """(1, T, n, 6) float32 positions and velocities, as the model reads them"""
    st = np.concatenate([episode.positions, episode.velocities], axis=-1)[start:stop]
    return torch.from_numpy(st.astype(np.float32))[None]


def tethers(episode: sim.Episode, start: int = 0) -> Tether:
    """the episode's tethers fit from frames start.., (1, n)"""
    st = states(episode, start, start + TETHER_FRAMES)
    return fit_tethers(st, torch.ones(1, st.shape[2], dtype=torch.bool))


def first(t: Tether) -> Tether:
    return Tether(*(None if x is None else x[0] for x in t))


def test_pendulum_and_gears_are_tethered_and_their_circles_measured():
    pend = sim.simulate("pendulum", {"links": 2, "length": 0.5, "angle_deg": 40.0, "angle2_deg": 10.0, "damping": 0.0}, seconds=1.0, render=False)
    t = tethers(pend)
    assert t.on[0].tolist() == [True, True]
    assert t.parent[0].tolist() == [-1, 0]  # the outer bob swings about the inner one
    assert t.length[0, 1].item() == pytest.approx(0.5, rel=1e-4)
    pivot_z = 2 * 0.5 + pend.params["size"] / 2 + 0.3  # sim.scenes.pendulum: CLEARANCE 0.3 m below the reach
    assert t.length[0, 0].item() == pytest.approx(0.5, rel=1e-4)
    np.testing.assert_allclose(t.centre[0, 0].numpy(), [0.0, 0.0, pivot_z], atol=1e-4)
    assert abs(t.axis[0, 0, 1].item()) == pytest.approx(1.0, abs=1e-4)  # hinge along y
    gears = sim.simulate("gears", {"num_gears": 3, "ratio": 1.5, "driver_speed": 3.0}, seconds=1.0, render=False)
    t = tethers(gears)
    assert t.on[0].all()
    np.testing.assert_allclose(t.length[0].numpy(), [0.7 * 0.08, 0.7 * 0.12, 0.7 * 0.08], rtol=1e-3)  # RIM_FRACTION of the pitch radii


def test_double_pendulum_steps_keep_both_links_and_give_back_the_simulators_step():
    """Stepping each frame from the simulator's state to the simulator's next one gives it back
    (to the trapezoid rule's error in the turn: the angle is the mean of the start and end speeds
    times dt), and any free step, however
    wrong, leaves both bobs their links' lengths from the pivot and from each other."""
    pend = sim.simulate("pendulum", {"links": 2, "length": 0.4, "angle_deg": 50.0, "angle2_deg": -30.0, "damping": 0.0}, seconds=2.0, render=False)
    st = states(pend)[0]  # (T, 2, 6)
    t = first(tethers(pend))
    stepped = torch.stack([tether_step(st[k], st[k + 1], t, DT) for k in range(len(st) - 1)])
    miss = (stepped[..., :3] - st[1:, :, :3]).norm(dim=-1)  # m, against steps of up to 0.17 m
    assert miss.max().item() < 1e-2 and miss.mean().item() < 1.5e-3
    cur = st[TETHER_FRAMES - 1]
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        cur = tether_step(cur, cur + 0.3 * torch.randn(cur.shape, generator=gen), t, DT)
    assert (cur[0, :3] - t.centre[0]).norm().item() == pytest.approx(0.4, rel=1e-4)
    assert (cur[1, :3] - cur[0, :3]).norm().item() == pytest.approx(0.4, rel=1e-4)


def test_a_tethered_step_is_read_back_from_its_end_along_its_tangent():
    """`tether_step` uses a free step only through its velocity change along t_mid; from the
    frame's start and end alone, `tangential_draw` gives back that direction and that change (for
    the outer bob: its own, in the inner bob's moving frame), which is what makes a tethered step's
    log-density exact. A free body has neither."""
    pend = sim.simulate("pendulum", {"links": 2, "length": 0.4, "angle_deg": 50.0, "angle2_deg": -30.0, "damping": 0.0}, seconds=1.0, render=False)
    st = states(pend)[0]  # (T, 2, 6)
    t = first(tethers(pend))
    gen = torch.Generator().manual_seed(1)
    for k in range(TETHER_FRAMES - 1, len(st) - 1):
        cur = st[k]
        free = cur + 0.3 * torch.randn(cur.shape, generator=gen)  # any free step, far off the circle
        end = tether_step(cur, free, t, DT)
        tangent, change = tangential_draw(cur, end, t, DT)
        torch.testing.assert_close(tangent, tether_tangent(cur, t, DT))
        torch.testing.assert_close(tangent.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(change, ((free[:, 3:] - cur[:, 3:]) * tangent).sum(-1), atol=2e-5, rtol=1e-4)
        # any other free step with the same changes along the tangents ends in the same place
        other = free + 0.2 * torch.randn(free.shape, generator=gen)
        other[:, 3:] -= ((other[:, 3:] - free[:, 3:]) * tangent).sum(-1, keepdim=True) * tangent
        torch.testing.assert_close(tether_step(cur, other, t, DT), end, atol=1e-5, rtol=0)
    loose = t._replace(on=torch.zeros(2, dtype=torch.bool))
    tangent, change = tangential_draw(st[5], st[6], loose, DT)
    assert not tangent.any() and not change.any()


@pytest.mark.parametrize("scene", ["projectile", "ramp", "drop", "collision", "stack", "push", "table_fall"])
def test_free_bodies_are_not_tethered(scene):
    episode = sim.simulate(scene, seed=3, seconds=1.0, render=False)
    for start in (0, 6):
        assert not tethers(episode, start).on.any(), (scene, start)


def test_tethered_pendulum_under_gravity_swings_as_simulated():
    """A simple pendulum stepped by gravity alone and kept on the fitted circle stays within 2 cm of
    the simulator over 3 s (its period is 1.42 s at 0.5 m), while the same steps without the
    tether leave it a metre away."""
    pend = sim.simulate("pendulum", {"links": 1, "length": 0.5, "angle_deg": 50.0, "damping": 0.0, "size": 0.08}, seconds=3.0, render=False)
    truth = states(pend)[0, :, :, :3]  # (T, 1, 3)
    t = tethers(pend)
    g = torch.tensor(GRAVITY)
    cur = states(pend)[0, TETHER_FRAMES - 1]
    free = cur.clone()
    err, err_free = [], []
    for k in range(TETHER_FRAMES, len(truth)):
        step = torch.cat([cur[..., :3] + cur[..., 3:] * DT, cur[..., 3:] + g * DT], dim=-1)
        cur = tether_step(cur, step, first(t), DT)
        free = torch.cat([free[..., :3] + free[..., 3:] * DT, free[..., 3:] + g * DT], dim=-1)
        err.append((cur[..., :3] - truth[k]).norm().item())
        err_free.append((free[..., :3] - truth[k]).norm().item())
    assert max(err) < 0.02
    assert max(err_free) > 1.0
    # gravity's pull along the tangent at the context's end: -g sin(angle) along the swing
    f = tether_features(states(pend)[0, 0], first(t), DT, 1.0)
    assert f[0, 3].item() == 1.0
    assert f[0, :3].norm().item() == pytest.approx(9.81 * np.sin(np.radians(50.0)) * DT, rel=1e-3)


def test_a_slowly_starting_inner_bob_is_tethered():
    """A double pendulum released with its inner rod near the vertical: the inner bob starts at a
    few cm/s and its centre, fit from millimetres of arc, leaves its velocity just over
    ANGLE_TOLERANCE off the perpendicular, which the angle alone rejected (the bob then fell as a
    free body); its speed along the radius, under RADIAL_SPEED_TOLERANCE, is the simulator's hinge. (A training
    episode's parameters, to the digit: rounded, this one passes the angle alone, so near the edge it is.)"""
    pend = sim.simulate("pendulum", {"links": 2, "length": 0.6516690578900386, "angle_deg": 10.871267550883331, "angle2_deg": 39.93766964062428, "mass": 1.6027289834247354, "size": 0.10040453509814987, "damping": 0.011744194792273177}, seconds=0.3, render=False)
    t = first(tethers(pend))
    assert t.on.tolist() == [True, True] and t.parent.tolist() == [-1, 0]


def test_free_bodies_pass_through_and_features_are_zero():
    episode = sim.simulate("projectile", seed=1, seconds=0.5, render=False)
    st = states(episode)[0]
    t = tethers(episode)
    nxt = st[5] + 0.1
    assert torch.equal(tether_step(st[4], nxt, first(t), DT), nxt)
    assert torch.equal(tether_features(st[4], first(t), DT, 1.0), torch.zeros(st.shape[1], 4))


def swing_rollout(episode: sim.Episode, frames: int, swing: bool = True, damping: float | None = None) -> torch.Tensor:
    """Positions (frames, n, 3) of the episode's bodies stepped from the end of the context by
    gravity and hinge damping alone: `gravity_swing` (at the scene's bob mass and, unless given,
    damping), or free fall (swing False), each frame's free step kept on the tethers."""
    t = first(tethers(episode))
    t = t.swinging(torch.zeros_like(t.on))
    cur = states(episode)[0, TETHER_FRAMES - 1]
    log_mass = torch.full(cur.shape[:1], float(np.log(episode.params["mass"])))
    zeta = torch.full(cur.shape[:1], episode.params["damping"] if damping is None else damping)
    out = []
    for _ in range(frames):
        dv = gravity_swing(cur, t, log_mass, zeta, DT) if swing else torch.tensor(GRAVITY) * DT
        cur = tether_step(cur, torch.cat([cur[:, :3] + (cur[:, 3:] + dv) * DT, cur[:, 3:] + dv], dim=-1), t, DT)
        out.append(cur[:, :3])
    return torch.stack(out)


@pytest.mark.parametrize("links, damping, within", [(1, 0.0, 0.005), (2, 0.0, 0.02), (1, 0.4, 0.005), (2, 0.4, 0.02)])
def test_gravity_swing_alone_rolls_a_pendulum_as_simulated(links, damping, within):
    """`gravity_swing` stepped frame by frame (20 fps) from the context's end tracks MuJoCo's RK4
    pendulum of 4 cm bobs on 0.5 m rods over 1.8 s, undamped and with hinge damping at an
    amplitude decay rate of 0.4 /s (the top of the OOD range): the simple one to within 5 mm, the
    double one (whose error grows faster: the frames' integration error, and the bobs' own inertia
    that the point masses leave out, 0.3% of the rod's) to within 2 cm. Its rods pull on each
    other: without that coupling (each bob in free fall, kept on its circle) the outer bob is off
    by more than 10 cm; and the damped pendulum swung as if undamped is off by more than 5 cm."""
    pend = sim.simulate("pendulum", {"links": links, "length": 0.5, "angle_deg": 40.0, "angle2_deg": -20.0, "damping": damping, "size": 0.08}, seconds=2.0, render=False)
    truth = states(pend)[0, TETHER_FRAMES:, :, :3]
    miss = (swing_rollout(pend, len(truth)) - truth).norm(dim=-1)  # (frames, links) m
    assert miss.max().item() < within
    if links == 2:
        assert (swing_rollout(pend, len(truth), swing=False) - truth).norm(dim=-1).max().item() > 0.1
    if damping:
        assert (swing_rollout(pend, len(truth), damping=0.0) - truth).norm(dim=-1).max().item() > 0.05


def test_gravity_swing_conserves_a_double_pendulums_energy_whatever_its_masses():
    """The coupled accelerations for unequal point masses (outer bob 3x and 1/3x the inner one),
    integrated in 1 ms frames for 1 s, keep kinetic plus potential energy to 0.1% of its swing; a
    body that is not tethered gets nothing."""
    L, g = 0.5, -GRAVITY[2]
    pivot = torch.tensor([0.0, 0.0, 2.0])
    a1, a2 = np.radians(60.0), np.radians(-30.0)
    p1 = pivot + L * torch.tensor([np.sin(a1), 0.0, -np.cos(a1)], dtype=torch.float32)
    p2 = p1 + L * torch.tensor([np.sin(a2), 0.0, -np.cos(a2)], dtype=torch.float32)
    start = torch.zeros(3, 6, dtype=torch.float64)
    start[0, :3], start[1, :3], start[2, :3] = p1, p2, torch.tensor([1.0, 0.0, 1.0])
    t = Tether(centre=torch.stack([pivot, torch.zeros(3), torch.zeros(3)]).double(), axis=torch.tensor([[0.0, 1.0, 0.0]] * 3, dtype=torch.float64),
               length=torch.tensor([L, L, 1.0], dtype=torch.float64), parent=torch.tensor([-1, 0, -1]), on=torch.tensor([True, True, False]), swings=torch.tensor([True, True, True]))
    dt = 1e-3
    for ratio in (3.0, 1 / 3):
        mass = torch.tensor([1.0, ratio, 1.0], dtype=torch.float64)
        energy = lambda s: (mass[:2] * (0.5 * s[:2, 3:].square().sum(-1) + g * s[:2, 2])).sum().item()  # noqa: E731  J
        cur, e0, lowest = start.clone(), energy(start), energy(start)
        for _ in range(1000):
            dv = gravity_swing(cur, t, mass.log(), torch.zeros(3, dtype=torch.float64), dt)
            assert not dv[2].any()
            cur = tether_step(cur, torch.cat([cur[:, :3] + (cur[:, 3:] + dv) * dt, cur[:, 3:] + dv], dim=-1), t, dt)
            lowest = min(lowest, (mass[:2] * g * cur[:2, 2]).sum().item())
        assert abs(energy(cur) - e0) < 1e-3 * (e0 - lowest)


def test_gravity_swing_loses_to_the_hinges_damping_what_they_dissipate():
    """With hinge damping (amplitude decay rates 0.3 /s at the pivot and 0.8 /s at the joint,
    outer bob 3x and 1/3x the inner one), a double pendulum stepped in 1 ms frames for 1 s loses
    kinetic plus potential energy at the hinges' rate b1 w1^2 + b2 (w2 - w1)^2, b_k = 2 z_k m_k L^2:
    energy plus what the hinges dissipated stays within 0.1% of the loss, which is more than half
    the swing's energy. Each hinge damping its own rod alone (-2 z_k w_k, uncoupled) misses by
    more than half the loss; the damping torques taken through the wrong inverse mass matrix, or the
    joint's damping on the absolute rather than the relative speed, break this."""
    L, g = 0.5, -GRAVITY[2]
    pivot = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    a1, a2 = np.radians(60.0), np.radians(-30.0)
    p1 = pivot + L * torch.tensor([np.sin(a1), 0.0, -np.cos(a1)], dtype=torch.float64)
    p2 = p1 + L * torch.tensor([np.sin(a2), 0.0, -np.cos(a2)], dtype=torch.float64)
    start = torch.zeros(2, 6, dtype=torch.float64)
    start[0, :3], start[1, :3] = p1, p2
    t = Tether(centre=torch.stack([pivot, torch.zeros(3, dtype=torch.float64)]), axis=axis.expand(2, 3), length=torch.tensor([L, L], dtype=torch.float64),
               parent=torch.tensor([-1, 0]), on=torch.tensor([True, True]), swings=torch.tensor([True, True]))
    zeta = torch.tensor([0.3, 0.8], dtype=torch.float64)
    dt = 1e-3

    def rates(s):  # the rods' angular speeds (rad/s): the inner about the pivot, the outer absolute
        w1 = (torch.linalg.cross(s[0, :3] - pivot, s[0, 3:]) * axis).sum() / L**2
        w2 = (torch.linalg.cross(s[1, :3] - s[0, :3], s[1, 3:] - s[0, 3:]) * axis).sum() / L**2
        return w1, w2

    for ratio in (3.0, 1 / 3):
        mass = torch.tensor([1.0, ratio], dtype=torch.float64)
        b = 2 * zeta * mass * L**2  # N m s: the hinges' damping
        energy = lambda s: (mass * (0.5 * s[:, 3:].square().sum(-1) + g * s[:, 2])).sum().item()  # noqa: E731  J
        power = lambda s: (b[0] * rates(s)[0] ** 2 + b[1] * (rates(s)[1] - rates(s)[0]) ** 2).item()  # noqa: E731  W dissipated
        cur, e0, dissipated = start.clone(), energy(start), 0.0
        for _ in range(1000):
            dv = gravity_swing(cur, t, mass.log(), zeta, dt)
            nxt = tether_step(cur, torch.cat([cur[:, :3] + (cur[:, 3:] + dv) * dt, cur[:, 3:] + dv], dim=-1), t, dt)
            dissipated += 0.5 * (power(cur) + power(nxt)) * dt
            cur = nxt
        swing = e0 - (mass * g * (pivot[2] - torch.tensor([L, 2 * L]))).sum().item()  # J above the pendulum hanging at rest
        assert dissipated > 0.5 * swing
        assert abs(energy(cur) + dissipated - e0) < 1e-3 * dissipated
