"""Tethers: bodies that move on a circle (a pendulum's bob on its rod, a gear's rim marker on its
axle, a block tipping about an edge, a double pendulum's outer bob about the inner one), found from
a few known frames and kept on it by a rollout.

A body on a hinge moves on a circle about a fixed centre in a fixed plane: its velocity is
perpendicular to its radius and its distance from the centre does not change. Simulated states
show this to float precision, and nothing else moving does (a projectile's arc or a ball rolling
down a ramp miss it by orders of magnitude more), so `fit_tethers` decides it from the context
alone, with no learning. A body hinged to such a body (a double pendulum's outer bob) does the same
in its parent's frame. `tether_step` then turns a frame's free step into motion on the circle: the
tangential part of its velocity change is kept, the radial part (what the rod or the axle does) is
replaced by the exact rotation. Without it, a pendulum's rollout integrates a held acceleration in
a straight line and its bob flies off the rod (`benchmarks/world_model_quality.py`: pendulum was the
family furthest out of distribution). `gravity_swing` gives what gravity and the hinges' damping do to a
simple or double pendulum of point masses over a frame, which the world model adds to every
undriven tethered body's step (`WorldModel.closed_form_step`): its dynamics head learns only what
that leaves out (the bobs' own inertia).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

GRAVITY = (0.0, 0.0, -9.81)  # m/s^2, sim's (`sim.scenes.base.mjcf`)
TETHER_FRAMES = 4  # the known frames a tether is fit from: a rollout's default context, a clip's first frames in training
TETHER_FEATURES = 4  # per body: gravity's tangential velocity change over a frame (3), tethered (1) (`tether_features`)
MIN_SPEED = 1e-3  # m/s: a frame at least this fast says which way the radius points
MIN_LENGTH, MAX_LENGTH = 0.005, 3.0  # m: the radii a tether may have (longer: a straight path)
MAX_TURN = 1.0  # rad: `gravity_swing` takes the rods' angular speeds, and what gravity adds to them in a frame, as at most this per frame (a pendulum turns far less; bounds a rollout gone wild)
MAX_DAMPING = 10.0  # 1/s: the hinge damping `gravity_swing` takes at most (sim's pendulum allows up to this; bounds a learnt one)
MAX_LOG_MASS_RATIO = 7.0  # a double pendulum's outer bob at most e^7 ~ 1100 times the inner's (`gravity_swing`: bounded for any learnt mass)
RADIUS_TOLERANCE = 1e-5  # relative spread of the distance from the centre over the frames
ANGLE_TOLERANCE = 1e-5  # |cos| of the angle between velocity and radius, at most, on every moving frame ...
RADIAL_SPEED_TOLERANCE, SWING_SPEED = 1e-6, 0.01  # m/s: ... or, on a frame at least SWING_SPEED fast, the speed along the radius at most this: a slowly starting bob's centre, fit from millimetres of arc, misses the angle alone
PLANE_TOLERANCE = 1e-5  # distance of the positions from the plane of motion, relative to the radius


class Tether(NamedTuple):
    """Each body's circle, (..., N, ·): centre (3) m, axis (3) the unit normal of its plane, length m
    (float32); parent (long): -1 where the centre is fixed, else the index of the tracked body whose
    position is the centre (a double pendulum's outer bob turns about the inner one; centre then
    unused); on bool (False: a free body; the rest is then meaningless); swings bool, the tethered
    bodies that gravity swings (`gravity_swing`), or None: none (as `fit_tethers` gives them;
    `swinging` says which)."""

    centre: torch.Tensor
    axis: torch.Tensor
    length: torch.Tensor
    parent: torch.Tensor
    on: torch.Tensor
    swings: torch.Tensor | None = None

    def unsqueeze(self, dim: int) -> Tether:
        """The same tethers with a new axis at dim (>= 0, before the bodies' axis): to broadcast
        over blocks or frames."""
        return Tether(*(None if t is None else t.unsqueeze(dim) for t in self))

    def swinging(self, driven: torch.Tensor) -> Tether:
        """The same tethers with gravity swinging every tethered body that driven (..., N) bool does
        not hold on its course (a gear's rim marker turns as its motor says; a pendulum's bob
        swings). swings is None where none is left: decided here, once per clip batch or rollout
        (a device sync), so that `gravity_swing` costs nothing in a batch without a pendulum."""
        swings = self.on & ~driven
        return self._replace(swings=swings if bool(swings.any()) else None)


def _circle_holds(p: torch.Tensor, v: torch.Tensor, centre: torch.Tensor, axis: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether positions p (..., K, 3) with velocities v (..., K, 3) move on the circle about centre
    (..., 3) in the plane normal to axis (..., 3), to the tolerances above, on frames moving (..., K)
    -> (holds (...) bool, length (...) m)."""
    radius = p - centre[..., None, :]
    r = radius.norm(dim=-1)  # (..., K)
    length = r.mean(-1)
    rel_spread = (r - length[..., None]).abs().amax(-1) / length.clamp(min=1e-12)
    speed = v.norm(dim=-1)  # (..., K) m/s
    radial = ((v * radius).sum(-1) / r.clamp(min=1e-12)).abs()  # m/s along the radius
    along = (radial / speed.clamp(min=1e-12) < ANGLE_TOLERANCE) | ((radial < RADIAL_SPEED_TOLERANCE) & (speed >= SWING_SPEED))
    off_radius = (moving & ~along).any(-1)
    off_plane = ((p - p.mean(-2, keepdim=True)) * axis[..., None, :]).sum(-1).abs().amax(-1) / length.clamp(min=1e-12)
    holds = (
        (moving.sum(-1) >= 2)
        & (rel_spread < RADIUS_TOLERANCE)
        & ~off_radius
        & (off_plane < PLANE_TOLERANCE)
        & (length >= MIN_LENGTH)
        & (length <= MAX_LENGTH)
    )
    return holds, length


def _plane(p: torch.Tensor, v: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane the velocities and displacements of p, v (..., K, 3) lie in: (axis (..., 3) its unit
    normal, basis (..., 3, 2) an orthonormal pair in it), from the eigenvectors of their scatter."""
    d = p - p[..., :1, :]
    moved = d.norm(dim=-1) > MIN_SPEED * 1e-2  # frames far enough from the first to say something (m)
    rows = torch.cat([v * moving[..., None], d * moved[..., None]], dim=-2)  # (..., 2K, 3)
    _, vecs = torch.linalg.eigh(rows.transpose(-1, -2) @ rows)
    return vecs[..., 0], vecs[..., 1:]


def fit_tethers(states: torch.Tensor, mask: torch.Tensor) -> Tether:
    """The circle each body moves on in known frames states (B, K, N, 6) SI (position, velocity; K
    >= 3) with mask (B, N) bool the tracked bodies -> `Tether` (B, N).

    In float64. A fixed centre: the plane of motion is the one the velocities and displacements lie
    in (`_plane`); in it, the centre c solves, by least squares, v_t . c = v_t . p_t for every moving
    frame (the radius is perpendicular to the velocity) and (p_t - p_0) . c = (|p_t|^2 - |p_0|^2) / 2
    (equal distances). A body is tethered when the result holds to float precision
    (`_circle_holds`): its distances from c agree within RADIUS_TOLERANCE, each moving frame's
    velocity is perpendicular to its radius within ANGLE_TOLERANCE (or, at SWING_SPEED or faster,
    moves along it slower than RADIAL_SPEED_TOLERANCE), the positions lie in the plane
    within PLANE_TOLERANCE, and the radius is within [MIN_LENGTH, MAX_LENGTH]; bodies that never
    move (fewer than two frames at MIN_SPEED) are free. A body that is not is then tried against
    each body tethered to a fixed centre, in that body's frame (relative positions and velocities,
    the centre at the origin): the first that holds is its parent."""
    out_dtype = states.dtype
    s = states.detach().double()
    p, v = s[..., :3].transpose(1, 2), s[..., 3:].transpose(1, 2)  # (B, N, K, 3)
    moving = v.norm(dim=-1) > MIN_SPEED  # (B, N, K)
    axis, basis = _plane(p, v, moving)  # (B, N, 3), (B, N, 3, 2)
    # least squares for the in-plane centre c = p_0 + basis @ x
    vhat = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    d = p - p[..., :1, :]
    dist = d.norm(dim=-1)
    moved = dist > MIN_SPEED * 1e-2
    a_v = (vhat @ basis) * moving[..., None]  # (B, N, K, 2)
    b_v = (vhat * d).sum(-1) * moving  # (B, N, K)
    a_d = (d / dist.clamp(min=1e-12)[..., None] @ basis) * moved[..., None]
    b_d = dist / 2 * moved
    A = torch.cat([a_v, a_d], dim=-2)  # (B, N, 2K, 2)
    b = torch.cat([b_v, b_d], dim=-1)  # (B, N, 2K)
    normal = A.transpose(-1, -2) @ A  # (B, N, 2, 2)
    solvable = torch.linalg.det(normal) > 1e-12 * (normal.diagonal(dim1=-2, dim2=-1).sum(-1) ** 2).clamp(min=1e-30)
    eye = torch.eye(2, dtype=s.dtype, device=s.device)
    x = torch.linalg.solve(torch.where(solvable[..., None, None], normal, eye), A.transpose(-1, -2) @ b[..., None])[..., 0]
    centre = p[..., 0, :] + (basis @ x[..., None])[..., 0]  # (B, N, 3)
    holds, length = _circle_holds(p, v, centre, axis, moving)
    fixed = mask.bool() & solvable & holds  # (B, N)

    # about another body: j relative to k, (B, N_j, N_k, K, 3), centre at the origin
    rp, rv = p[:, :, None] - p[:, None], v[:, :, None] - v[:, None]
    r_moving = rv.norm(dim=-1) > MIN_SPEED
    r_axis, _ = _plane(rp, rv, r_moving)
    r_holds, r_length = _circle_holds(rp, rv, torch.zeros_like(rp[..., 0, :]), r_axis, r_moving)
    r_holds = r_holds & fixed[:, None, :] & (mask.bool() & ~fixed)[:, :, None]  # the parent on a fixed centre; the child tracked and not
    child = r_holds.any(-1)  # (B, N)
    parent = torch.where(child, r_holds.to(torch.int8).argmax(-1), -1)  # the first that holds
    pick = parent.clamp(min=0)[..., None]
    axis = torch.where(child[..., None], r_axis.gather(2, pick[..., None].expand(-1, -1, 1, 3))[:, :, 0], axis)
    length = torch.where(child, r_length.gather(2, pick)[..., 0], length)
    on = fixed | child
    length = torch.where(on, length, torch.ones_like(length))  # free bodies: a harmless 1 m, so no step divides by 0
    return Tether(centre.to(out_dtype), axis.to(out_dtype), length.to(out_dtype), parent, on)


def _centres(cur: torch.Tensor, tether: Tether) -> torch.Tensor:
    """Each body's centre (..., N, 3) at states cur (..., N, 6): the fixed centre, or its parent's
    position."""
    parent = tether.parent.expand(cur.shape[:-1])
    of_parent = cur[..., :3].gather(-2, parent.clamp(min=0)[..., None].expand(*parent.shape, 3))
    return torch.where((parent >= 0)[..., None], of_parent, tether.centre)


def _frame(pos: torch.Tensor, centre: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit radius (from centre) and unit tangent (axis x radius) at positions pos (..., N, 3)."""
    r = pos - centre
    rhat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    return rhat, torch.linalg.cross(axis.expand_as(rhat), rhat)


def _turn(cur: torch.Tensor, centre: torch.Tensor, axis: torch.Tensor, length: torch.Tensor, dt: float):
    """At states cur (..., N, 6) on circles about centre (..., N, 3), normal axis, radius length (...,
    N, 1): the unit radius and tangent (..., N, 3), the tangential speed s (..., N, 1) m/s and t_mid,
    the tangent halfway through the frame's first-guess turn s dt / length: the direction along
    which `tether_step` reads a free step's velocity change."""
    rhat, that = _frame(cur[..., :3], centre, axis)
    s = (cur[..., 3:] * that).sum(-1, keepdim=True)
    half = s * dt / (2 * length)
    return rhat, that, s, torch.cos(half) * that - torch.sin(half) * rhat


def _circle_step(cur: torch.Tensor, nxt: torch.Tensor, centre: torch.Tensor, axis: torch.Tensor, length: torch.Tensor, dt: float) -> torch.Tensor:
    """`tether_step` about centre (..., N, 3) for every body (`tether_step` picks the tethered)."""
    length = length[..., None]
    rhat, that, s, t_mid = _turn(cur, centre, axis, length, dt)
    s_new = s + ((nxt[..., 3:] - cur[..., 3:]) * t_mid).sum(-1, keepdim=True)
    turn = (s + s_new) * dt / (2 * length)
    pos = centre + length * (torch.cos(turn) * rhat + torch.sin(turn) * that)
    vel = s_new * (torch.cos(turn) * that - torch.sin(turn) * rhat)
    return torch.cat([pos, vel], dim=-1)


def tether_step(cur: torch.Tensor, nxt: torch.Tensor, tether: Tether | None, dt: float) -> torch.Tensor:
    """A frame's step of tethered bodies: cur (..., N, 6) SI the frame's start and nxt (..., N, 6) its
    free end (the dynamics head's step and the closed-form step) -> (..., N, 6), nxt where free.

    The tangential speed s = v . t (t = axis x radius) changes by the free step's velocity change
    along the tangent halfway through the frame's turn, s' = s + (v_nxt - v) . t_mid; the body
    turns by (s + s') dt / (2 length) about the axis and ends on the circle moving along its
    tangent at s'. The radial part of the free step (the centripetal pull of the rod) is the
    rotation's; a free step that is already the circle's gives it back (to second order in the turn).
    Bodies about a fixed centre step first; a body whose centre is another body's then takes the
    same step in its parent's frame (its state relative to the parent's, before and after the
    parent's step), and is put back at the parent's new state plus that."""
    if tether is None:
        return nxt
    shape = cur.shape[:-1]
    on, parent = tether.on.expand(shape), tether.parent.expand(shape)
    fixed = _circle_step(cur, nxt, tether.centre, tether.axis, tether.length, dt)
    out = torch.where((on & (parent < 0))[..., None], fixed, nxt)
    index = parent.clamp(min=0)[..., None].expand(*shape, 6)
    p_cur, p_nxt = cur.gather(-2, index), out.gather(-2, index)  # each body's parent, before and after its step
    relative = _circle_step(cur - p_cur, nxt - p_nxt, torch.zeros_like(tether.centre), tether.axis, tether.length, dt)
    return torch.where((on & (parent >= 0))[..., None], p_nxt + relative, out)


def _chain_accelerations(th1, th2, w1, w2, q, l1, l2, g, z1, z2):
    """Angular accelerations (rad/s^2) of a double pendulum of point masses m1, m2 = q m1 on
    massless rods l1, l2 (m) at angles th1, th2 (rad, absolute, from the way gravity g (m/s^2)
    pulls) turning at w1, w2 (rad/s), from its Lagrangian; q = 0 is the simple pendulum,
    -g sin(th1) / l1 - 2 z1 w1.

    Hinge k's damping torque is -b_k times its angular speed (w1, and w2 - w1 at the inner bob),
    b_k = 2 z_k m_k l_k^2 as `sim.scenes.pendulum` sets it from the amplitude decay rate z_k (1/s):
    generalised forces Q1 = -b1 w1 + b2 (w2 - w1), Q2 = -b2 (w2 - w1), taken through the inverse
    of the mass matrix [[(m1 + m2) l1^2, m2 l1 l2 cos d], [m2 l1 l2 cos d, m2 l2^2]]."""
    d = th1 - th2
    cos_d, sin_d = torch.cos(d), torch.sin(d)
    den = 2 + 2 * q * sin_d * sin_d  # >= 2: twice (1 + q sin^2 d), the mass matrix's determinant / (m1 m2 l1^2 l2^2 / q)
    a1 = (-g * (2 + q) * torch.sin(th1) - q * g * torch.sin(th1 - 2 * th2) - 2 * sin_d * q * (w2 * w2 * l2 + w1 * w1 * l1 * cos_d)) / (l1 * den)
    a2 = 2 * sin_d * ((1 + q) * (w1 * w1 * l1 + g * torch.cos(th1)) + w2 * w2 * l2 * q * cos_d) / (l2 * den)
    rel = z2 * (w2 - w1)  # the outer hinge's damping, per unit of 2 b2 / (m2 l2^2)
    a1 = a1 + 4 * (-z1 * w1 + q * rel * (l2 * l2 / (l1 * l1) + l2 / l1 * cos_d)) / den
    a2 = a2 + 4 * (z1 * l1 / l2 * cos_d * w1 - q * l2 / l1 * cos_d * rel - (1 + q) * rel) / den
    return a1, a2


def gravity_swing(cur: torch.Tensor, tether: Tether | None, log_mass: torch.Tensor, damping: torch.Tensor, dt: float) -> torch.Tensor:
    """What gravity and the hinges' damping do to each tethered body over one frame, as the
    velocity change (..., N, 3) m/s of its free step that `tether_step` turns into that motion;
    zeros where free. cur (..., N, 6) SI the frame's starting states; tether (..., N) broadcast
    against it; log_mass (..., N) log kg; damping (..., N) 1/s, the amplitude decay rate of each
    body's own hinge (the one its rod turns on). Only the bodies that tether.swings holds swing
    (`Tether.swinging`; None: none). It is physics of the states alone and carries no gradient:
    the masses (their ratio, in a double pendulum) and the damping, its learnt inputs, learn from
    the caption (and the masses from the contact impulses).

    The bodies are point masses on massless rods: a body about a fixed centre with no child is a
    simple pendulum; one with a child (the first body tethered to it) and that child are a double
    pendulum, coupled through the rods (`_chain_accelerations`, with the masses given). The rods'
    angles from the way gravity pulls in their plane and their angular speeds are integrated over
    the frame by one RK4 step; each rod's change of angular speed times its length is the
    tangential speed change `tether_step` reads along its `tether_tangent`, and a child's free step
    adds its parent's own velocity change over the frame. What this leaves out (the bobs' own
    inertia, a block tipping about an edge rather than a point mass) is the dynamics head's to
    learn."""
    if tether is None or tether.swings is None:
        return cur.new_zeros(cur.shape[:-1] + (3,))
    with torch.no_grad():
        return _swing(cur, tether, log_mass, damping, dt)


def _swing(cur: torch.Tensor, tether: Tether, log_mass: torch.Tensor, damping: torch.Tensor, dt: float) -> torch.Tensor:
    """`gravity_swing` of the bodies that swing, tether.swings (not None). Each double pendulum is
    worked out on its inner bob's row (the rods' unit vectors u, tangents t = axis x u, all in the
    inner bob's axis's sense, from `_turn`), and its outer bob takes its step from there."""
    shape = cur.shape[:-1]
    index = torch.arange(shape[-1], device=cur.device)
    on, parent = tether.on.expand(shape), tether.parent.expand(shape)
    axis, length = tether.axis.expand(*shape, 3), tether.length.expand(shape)
    fixed = on & (parent < 0)
    owns = (parent.unsqueeze(-2) == index[:, None]) & on.unsqueeze(-2)  # (..., N, N): [j, k] k is tethered to j
    has_child = owns.any(-1) & fixed
    kid = owns.to(torch.int8).argmax(-1)  # (..., N): each body's first child (meaningless without one)
    up = parent.clamp(min=0)
    child = on & (parent >= 0) & (_rows(kid, up) == index)  # a parent's first child; any other swings free of gravity here

    g = cur.new_tensor(GRAVITY)
    g_plane = g - (g * axis).sum(-1, keepdim=True) * axis  # gravity in each body's plane of motion
    g_size = g_plane.norm(dim=-1)
    down = g_plane / g_size.clamp(min=1e-9)[..., None]
    side = torch.linalg.cross(axis, down)  # where a rod turned a quarter turn from down points
    centre, l1, l2 = tether.centre.expand(*shape, 3), length[..., None], _rows(length, kid)[..., None]
    # each rod as `tether_step` sees it: unit radius u, tangent t, tangential speed s, t_mid;
    # the child's rod relative to its parent, in the parent's axis's sense
    u1, _, s1, mid1 = _turn(cur, centre, axis, l1, dt)
    u2, _, s2, mid2 = _turn(_rows(cur, kid) - cur, torch.zeros_like(centre), axis, l2, dt)
    angle = lambda u: torch.atan2((u * side).sum(-1), (u * down).sum(-1))  # noqa: E731  rad, from down
    spin = MAX_TURN / dt
    q = torch.where(has_child, (_rows(log_mass, kid) - log_mass).clamp(max=MAX_LOG_MASS_RATIO).exp(), torch.zeros_like(log_mass))  # m2 / m1
    z1, z2 = damping.clamp(0, MAX_DAMPING), _rows(damping, kid).clamp(0, MAX_DAMPING)  # 1/s: the inner hinge's and the outer's

    def rate(y):  # y (4, ...): th1, th2, w1, w2
        a1, a2 = _chain_accelerations(y[0], y[1], y[2], y[3], q, l1[..., 0], l2[..., 0], g_size, z1, z2)
        return torch.stack([y[2], y[3], a1, a2])

    y = torch.stack([angle(u1), angle(u2), (s1 / l1)[..., 0].clamp(-spin, spin), (s2 / l2)[..., 0].clamp(-spin, spin)])
    k1 = rate(y)
    k2 = rate(y + dt / 2 * k1)
    k3 = rate(y + dt / 2 * k2)
    k4 = rate(y + dt * k3)
    change = (dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)).clamp(-spin, spin)  # (4, ...): the rods' angle and angular-speed changes over the frame
    # `tether_step` reads a free step along t_mid, and a child's relative to its parent's own change
    own = mid1 * (l1[..., 0] * change[2])[..., None]  # the fixed bodies' free steps
    parent_change = _circle_step(cur, torch.cat([cur[..., :3], cur[..., 3:] + own], dim=-1), centre, axis, length, dt)[..., 3:] - cur[..., 3:]
    kid_step = mid2 * (l2[..., 0] * change[3])[..., None] + parent_change  # (..., N, 3) on the parent's row
    swing = torch.where(fixed[..., None], own, torch.where(child[..., None], _rows(kid_step, up), torch.zeros_like(own)))
    return swing * tether.swings.expand(shape)[..., None]


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (..., N) or (..., N, C) at each body's index (..., N) along the bodies' axis."""
    if x.dim() == index.dim():
        return x.gather(-1, index)
    return x.gather(-2, index[..., None].expand(*index.shape, x.shape[-1]))


def tether_features(cur: torch.Tensor, tether: Tether | None, dt: float, vel_unit: float) -> torch.Tensor:
    """Each body's tether inputs to the dynamics head (..., N, TETHER_FEATURES) at states cur (...,
    N, 6) SI: gravity's velocity change along the tangent over one frame / vel_unit (what a
    pendulum's bob gains; a driven wheel's rim marker does not), and 1 where tethered; 0 where free."""
    if tether is None:
        return cur.new_zeros(*cur.shape[:-1], TETHER_FEATURES)
    _, that = _frame(cur[..., :3], _centres(cur, tether), tether.axis)
    g = cur.new_tensor(GRAVITY)
    pull = (that * g).sum(-1, keepdim=True) * that * dt / vel_unit  # (..., N, 3)
    on = _on(cur, tether)
    return torch.cat([pull, torch.ones_like(on)], dim=-1) * on


def _lengths(cur: torch.Tensor, tether: Tether) -> torch.Tensor:
    return tether.length.expand(cur.shape[:-1])[..., None]  # (..., N, 1) m


def _on(cur: torch.Tensor, tether: Tether) -> torch.Tensor:
    return tether.on.expand(cur.shape[:-1])[..., None].to(cur.dtype)  # (..., N, 1): 1 where tethered


def _in_circle_frame(cur: torch.Tensor, tether: Tether) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """States cur (..., N, 6) as each body's circle sees them: a child's relative to its parent's
    (about the origin) -> (those states, the centres (..., N, 3), child (..., N, 1) bool, each
    body's parent's states (..., N, 6))."""
    shape = cur.shape[:-1]
    parent = tether.parent.expand(shape)
    of_parent = cur.gather(-2, parent.clamp(min=0)[..., None].expand(*shape, 6))
    child = (parent >= 0)[..., None]
    centre = tether.centre.expand(*shape, 3)
    return torch.where(child, cur - of_parent, cur), torch.where(child, torch.zeros_like(centre), centre), child, of_parent


def tether_tangent(cur: torch.Tensor, tether: Tether | None, dt: float) -> torch.Tensor:
    """(..., N, 3) t_mid, the unit vector along which `tether_step` reads each tethered body's next
    free step from states cur (..., N, 6): the tangent halfway through the frame's turn, in the
    parent's frame for a child; zeros where free. Only the step's velocity change along it decides
    where the body goes, so that one component is what the step draws (`tangential_draw`)."""
    if tether is None:
        return cur.new_zeros(cur.shape[:-1] + (3,))
    start, centre, _, _ = _in_circle_frame(cur, tether)
    return _turn(start, centre, tether.axis, _lengths(cur, tether), dt)[3] * _on(cur, tether)


def tangential_draw(cur: torch.Tensor, nxt: torch.Tensor, tether: Tether | None, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What a tethered body's step drew, read back from its start cur and end nxt (..., N, 6) SI,
    both on the tethers (a rollout's step, or the simulator's): (`tether_tangent` (..., N, 3); the
    free step's velocity change along it (..., N) m/s, 0 where free). That change is s' - s, the
    tangential speeds after and before, plus for a child its parent's own velocity change along it;
    its density is the step distribution's projected on the tangent, exactly."""
    if tether is None:
        return cur.new_zeros(cur.shape[:-1] + (3,)), cur.new_zeros(cur.shape[:-1])
    start, centre, child, parent_start = _in_circle_frame(cur, tether)
    end, _, _, parent_end = _in_circle_frame(nxt, tether)
    _, _, s, t_mid = _turn(start, centre, tether.axis, _lengths(cur, tether), dt)
    _, that_end = _frame(end[..., :3], centre, tether.axis)
    parent_change = ((parent_end - parent_start)[..., 3:] * t_mid).sum(-1, keepdim=True)
    change = (end[..., 3:] * that_end).sum(-1, keepdim=True) - s + child * parent_change
    on = _on(cur, tether)
    return t_mid * on, (change * on)[..., 0]
