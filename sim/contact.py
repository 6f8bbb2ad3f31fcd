"""Contact model: simulator settings that make MuJoCo's soft contacts give textbook restitution and
Coulomb friction.

MuJoCo contacts are spring-dampers in acceleration space. We use the direct form
`solref = (-stiffness, -damping)` with a constant impedance (`solimp` dmin = dmax), which makes a
contact a linear spring-damper whose coefficient of restitution depends only on its damping ratio
(not on impact speed or mass). Because the contact force is unilateral (it cannot pull), the
textbook relation e = exp(-pi*zeta/sqrt(1-zeta^2)) does not hold; `RESTITUTION_TABLE` is the
measured relation, produced by `python -m sim.contact` (a sphere dropped from 0.2, 1 and 3 m).
"""

from __future__ import annotations

import math

import numpy as np

TIMESTEP = 0.001  # s; resolves the contact oscillation (omega * dt ~ 0.3) and keeps damping stable
CONTACT_PERIOD = 0.02  # s; natural period of the contact spring (penetration ~ v / (2 pi / period))
IMPEDANCE = 0.99  # solimp dmin = dmax: the contact follows the spring-damper almost exactly
IMPRATIO = 10.0  # frictional-to-normal impedance ratio: stiff friction, little creep (elliptic cone)

# damping ratio zeta -> measured coefficient of restitution (velocity ratio), monotone decreasing
ZETA = np.linspace(0.0, 1.5, 16)
RESTITUTION_TABLE = np.array(
    [1.0, 0.751, 0.576, 0.453, 0.363, 0.294, 0.243, 0.202, 0.170, 0.145, 0.124, 0.107, 0.093, 0.082, 0.072, 0.065]
)
MIN_RESTITUTION = float(RESTITUTION_TABLE[-1])  # below this the damping would be unstable at TIMESTEP


def damping_ratio(restitution: float) -> float:
    """The contact damping ratio that gives this coefficient of restitution."""
    e = min(max(restitution, MIN_RESTITUTION), 1.0)
    return float(np.interp(-e, -RESTITUTION_TABLE, ZETA))


def solref(restitution: float) -> str:
    """MJCF `solref` (direct form: -stiffness -damping) for a contact with this restitution."""
    omega = 2 * math.pi / CONTACT_PERIOD
    return f"{-omega * omega:.6g} {-2 * damping_ratio(restitution) * omega:.6g}"


SOLIMP = f"{IMPEDANCE} {IMPEDANCE} 0.001 0.5 2"


def measure_restitution(zeta: float, height: float = 1.0, radius: float = 0.05) -> float:
    """Drop a sphere and return |v_out / v_in| for a contact of damping ratio zeta."""
    import mujoco

    omega = 2 * math.pi / CONTACT_PERIOD
    xml = f"""<mujoco><option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic"/>
    <default><geom solref="{-omega * omega} {-2 * zeta * omega}" solimp="{SOLIMP}"/></default>
    <worldbody><geom type="plane" size="5 5 .1"/>
    <body pos="0 0 {height + radius}"><freejoint/><geom type="sphere" size="{radius}" mass="1"/></body>
    </worldbody></mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    vz = []
    for _ in range(int((math.sqrt(2 * height / 9.81) + 0.25) / TIMESTEP)):
        mujoco.mj_step(model, data)
        vz.append(data.qvel[2])
    return float(max(vz) / -min(vz))


if __name__ == "__main__":
    table = [np.mean([measure_restitution(z, h) for h in (0.2, 1.0, 3.0)]) for z in ZETA]
    print("RESTITUTION_TABLE = np.array([" + ", ".join(f"{e:.3f}" for e in table) + "])")
