"""Tethers: bodies that move on a fixed circle (a pendulum's bob on its rod, a gear's rim marker on
its axle, a block tipping about an edge), found from a few known frames and kept on it by a rollout.

A body on a hinge moves on a circle about a fixed centre in a fixed plane: its velocity is
perpendicular to its radius and its distance from the centre does not change. Simulated states
show this to float precision, and nothing else moving does (a double pendulum's outer bob, a
projectile's arc or a ball rolling down a ramp miss it by orders of magnitude more), so `fit_tethers`
decides it from the context alone, with no learning. `tether_step` then turns a frame's free step
into motion on the circle: the tangential part of its velocity change is kept, the radial part
(what the rod or the axle does) is replaced by the exact rotation. Without it, a pendulum's rollout
integrates a held acceleration in a straight line and its bob flies off the rod (`benchmarks/
world_model_quality.py`: pendulum was the family furthest out of distribution).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

GRAVITY = (0.0, 0.0, -9.81)  # m/s^2, sim's (`sim.scenes.base.mjcf`)
TETHER_FRAMES = 4  # the known frames a tether is fit from: a rollout's default context, a clip's first frames in training
TETHER_FEATURES = 4  # per body: gravity's tangential velocity change over a frame (3), tethered (1) (`tether_features`)
MIN_SPEED = 1e-3  # m/s: a frame at least this fast says which way the radius points
MIN_LENGTH, MAX_LENGTH = 0.005, 3.0  # m: the radii a tether may have (longer: a straight path)
RADIUS_TOLERANCE = 1e-5  # relative spread of the distance from the centre over the frames
ANGLE_TOLERANCE = 1e-5  # |cos| of the angle between velocity and radius, at most, on every moving frame
PLANE_TOLERANCE = 1e-5  # distance of the positions from the plane of motion, relative to the radius


class Tether(NamedTuple):
    """Each body's circle, (..., N, ·) float32: centre (3) m, axis (3) the unit normal of its plane,
    length m, on bool (False: a free body; centre, axis and length are then meaningless)."""

    centre: torch.Tensor
    axis: torch.Tensor
    length: torch.Tensor
    on: torch.Tensor

    def unsqueeze(self, dim: int) -> Tether:
        """The same tethers with a new axis at dim (>= 0, before the bodies' axis): to broadcast
        over blocks or frames."""
        return Tether(*(t.unsqueeze(dim) for t in self))


def fit_tethers(states: torch.Tensor, mask: torch.Tensor) -> Tether:
    """The circle each body moves on in known frames states (B, K, N, 6) SI (position, velocity; K
    >= 3) with mask (B, N) bool the tracked bodies -> `Tether` (B, N).

    In float64: the plane of motion is the one the velocities and displacements lie in (the
    eigenvector of their scatter with the smallest eigenvalue); in it, the centre c solves, by least
    squares, v_t . c = v_t . p_t for every moving frame (the radius is perpendicular to the
    velocity) and (p_t - p_0) . c = (|p_t|^2 - |p_0|^2) / 2 (equal distances). A body is tethered
    when the result holds to float precision: its distances from c agree within RADIUS_TOLERANCE,
    each moving frame's velocity is perpendicular to its radius within ANGLE_TOLERANCE, the
    positions lie in the plane within PLANE_TOLERANCE, and the radius is within [MIN_LENGTH,
    MAX_LENGTH]; bodies that never move (fewer than two frames at MIN_SPEED) are free."""
    out_dtype = states.dtype
    s = states.detach().double()
    p, v = s[..., :3].transpose(1, 2), s[..., 3:].transpose(1, 2)  # (B, N, K, 3)
    speed = v.norm(dim=-1)  # (B, N, K)
    moving = speed > MIN_SPEED
    d = p - p[..., :1, :]  # (B, N, K, 3) displacements from the first frame
    dist = d.norm(dim=-1)
    moved = dist > MIN_SPEED * 1e-2  # frames far enough from the first to say something (m)
    rows = torch.cat([v * moving[..., None], d * moved[..., None]], dim=-2)  # (B, N, 2K, 3)
    scatter = rows.transpose(-1, -2) @ rows  # (B, N, 3, 3)
    _, vecs = torch.linalg.eigh(scatter)
    axis, e1, e2 = vecs[..., 0], vecs[..., 1], vecs[..., 2]  # (B, N, 3): plane normal, in-plane basis
    basis = torch.stack([e1, e2], dim=-1)  # (B, N, 3, 2)
    # least squares for the in-plane centre c = p_0 + basis @ x
    vhat = v / speed.clamp(min=1e-12)[..., None]
    a_v = (vhat @ basis) * moving[..., None]  # (B, N, K, 2)
    b_v = ((vhat * (p - p[..., :1, :])).sum(-1)) * moving  # (B, N, K)
    dhat = d / dist.clamp(min=1e-12)[..., None]
    a_d = (dhat @ basis) * moved[..., None]
    b_d = dist / 2 * moved
    A = torch.cat([a_v, a_d], dim=-2)  # (B, N, 2K, 2)
    b = torch.cat([b_v, b_d], dim=-1)  # (B, N, 2K)
    normal = A.transpose(-1, -2) @ A  # (B, N, 2, 2)
    det = torch.linalg.det(normal)
    solvable = det > 1e-12 * (normal.diagonal(dim1=-2, dim2=-1).sum(-1) ** 2).clamp(min=1e-30)
    eye = torch.eye(2, dtype=s.dtype, device=s.device)
    x = torch.linalg.solve(torch.where(solvable[..., None, None], normal, eye), (A.transpose(-1, -2) @ b[..., None]))[..., 0]
    centre = p[..., 0, :] + (basis @ x[..., None])[..., 0]  # (B, N, 3)
    radius = p - centre[..., None, :]  # (B, N, K, 3)
    r = radius.norm(dim=-1)  # (B, N, K)
    length = r.mean(-1)
    rel_spread = (r - length[..., None]).abs().amax(-1) / length.clamp(min=1e-12)
    cos = ((vhat * radius).sum(-1) / r.clamp(min=1e-12)).abs().masked_fill(~moving, 0).amax(-1)
    off_plane = ((p - p.mean(-2, keepdim=True)) * axis[..., None, :]).sum(-1).abs().amax(-1) / length.clamp(min=1e-12)
    on = (
        mask.bool()
        & solvable
        & (moving.sum(-1) >= 2)
        & (rel_spread < RADIUS_TOLERANCE)
        & (cos < ANGLE_TOLERANCE)
        & (off_plane < PLANE_TOLERANCE)
        & (length >= MIN_LENGTH)
        & (length <= MAX_LENGTH)
    )
    length = torch.where(on, length, torch.ones_like(length))  # free bodies: a harmless 1 m, so no step divides by 0
    return Tether(centre.to(out_dtype), axis.to(out_dtype), length.to(out_dtype), on)


def _frame(cur: torch.Tensor, tether: Tether) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit radius (from the centre) and unit tangent (axis x radius) at positions cur[..., :3]."""
    r = cur[..., :3] - tether.centre
    rhat = r / r.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    that = torch.linalg.cross(tether.axis, rhat)
    return rhat, that


def tether_step(cur: torch.Tensor, nxt: torch.Tensor, tether: Tether | None, dt: float) -> torch.Tensor:
    """A frame's step of tethered bodies: cur (..., N, 6) SI the frame's start and nxt (..., N, 6) its
    free end (the dynamics head's step and the contact impulses) -> (..., N, 6), nxt where free.

    The tangential speed s = v . t (t = axis x radius) changes by the free step's velocity change
    along the tangent halfway through the frame's turn, s' = s + (v_nxt - v) . t_mid; the body
    turns by (s + s') dt / (2 length) about the axis and ends on the circle moving along its
    tangent at s'. The radial part of the free step (the centripetal pull of the rod) is the
    rotation's; a free step that is already the circle's gives it back (to second order in the turn)."""
    if tether is None:
        return nxt
    length = tether.length[..., None]
    rhat, that = _frame(cur, tether)
    s = (cur[..., 3:] * that).sum(-1, keepdim=True)  # (..., N, 1) m/s
    half = s * dt / (2 * length)  # the turn's first guess, halved
    t_mid = torch.cos(half) * that - torch.sin(half) * rhat
    s_new = s + ((nxt[..., 3:] - cur[..., 3:]) * t_mid).sum(-1, keepdim=True)
    turn = (s + s_new) * dt / (2 * length)
    pos = tether.centre + length * (torch.cos(turn) * rhat + torch.sin(turn) * that)
    vel = s_new * (torch.cos(turn) * that - torch.sin(turn) * rhat)
    return torch.where(tether.on[..., None], torch.cat([pos, vel], dim=-1), nxt)


def tether_features(cur: torch.Tensor, tether: Tether | None, dt: float, vel_unit: float) -> torch.Tensor:
    """Each body's tether inputs to the dynamics head (..., N, TETHER_FEATURES) at states cur (...,
    N, 6) SI: gravity's velocity change along the tangent over one frame / vel_unit (what a
    pendulum's bob gains; a driven wheel's rim marker does not), and 1 where tethered; 0 where free."""
    if tether is None:
        return cur.new_zeros(*cur.shape[:-1], TETHER_FEATURES)
    _, that = _frame(cur, tether)
    g = cur.new_tensor(GRAVITY)
    pull = (that * g).sum(-1, keepdim=True) * that * dt / vel_unit  # (..., N, 3)
    on = tether.on[..., None].to(cur.dtype).expand(*pull.shape[:-1], 1)
    return torch.cat([pull, torch.ones_like(on)], dim=-1) * on
