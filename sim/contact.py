"""Contact model: simulator settings that make MuJoCo's soft contacts give textbook restitution and
Coulomb friction.

MuJoCo contacts are spring-dampers in acceleration space. We use the direct form
`solref = (-stiffness, -damping)` with a constant impedance (`solimp` dmin = dmax), which makes a
contact a linear spring-damper whose coefficient of restitution depends only on its damping ratio
(not on impact speed or mass). Because the contact force is unilateral (it cannot pull), the
textbook relation e = exp(-pi*zeta/sqrt(1-zeta^2)) does not hold; `RESTITUTION_TABLE` is the
measured relation, produced by `python -m sim.contact`.

Calibration. At a 1 ms step the damping force b*v switches on within one step of first contact, so
the realised restitution of one impact depends on where in a step the contact begins (the sub-step
"phase"): about +-0.04 absolute at every restitution, independent of impact speed and mass. The
table therefore holds, for each damping ratio, the MEAN restitution over 40 drop heights from 0.1 to
3 m (impact speeds 1.4-7.7 m/s), which averages the phase out; one impact lies within +-0.05 of
the requested value (tests/test_physics.py). A smaller step would shrink the scatter proportionally
(0.5 ms: +-0.02) at twice the simulation cost; the softer alternative (a longer CONTACT_PERIOD)
would deepen penetration (about v * CONTACT_PERIOD / 2pi: 1.6 cm at 5 m/s now).

Friction. The elliptic cone with IMPRATIO = 10 makes the frictional constraint 10x stiffer than the
normal one, so a box slides with the Coulomb acceleration g(sin a - mu cos a) and sticks when
mu > tan a (creep below 1 mm/s); rolling and torsional friction are inactive (condim 3), so a ball
rolls without loss.
"""

from __future__ import annotations

import math

import numpy as np

TIMESTEP = 0.001  # s; resolves the contact oscillation (omega * dt ~ 0.3) and keeps damping stable
CONTACT_PERIOD = 0.02  # s; natural period of the contact spring (penetration ~ v / (2 pi / period))
IMPEDANCE = 0.99  # solimp dmin = dmax: the contact follows the spring-damper almost exactly
IMPRATIO = 10.0  # frictional-to-normal impedance ratio: stiff friction, little creep (elliptic cone)

# damping ratio zeta -> measured coefficient of restitution (velocity ratio, mean over CALIBRATION_HEIGHTS),
# monotone decreasing; regenerate with `python -m sim.contact`
ZETA = np.linspace(0.0, 1.5, 31)
RESTITUTION_TABLE = np.array(
    [
        1.0, 0.8597, 0.7438, 0.6474, 0.5673, 0.4995, 0.4414, 0.3922, 0.3503, 0.3134,
        0.2812, 0.2536, 0.2296, 0.2079, 0.1886, 0.1718, 0.1571, 0.1439, 0.1317, 0.1206,
        0.1110, 0.1026, 0.0948, 0.0875, 0.0806, 0.0748, 0.0699, 0.0652, 0.0606, 0.0561,
        0.0535,
    ]
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
    for _ in range(int((math.sqrt(2 * height / 9.81) + CONTACT_PERIOD + 0.03) / TIMESTEP)):
        mujoco.mj_step(model, data)
        vz.append(data.qvel[2])
    return float(max(vz) / -min(vz))


CALIBRATION_HEIGHTS = np.linspace(0.1, 3.0, 40)  # m; spread to average the sub-step contact phase


def calibrate() -> np.ndarray:
    """The mean measured restitution for each damping ratio in ZETA."""
    return np.array([np.mean([measure_restitution(z, h) for h in CALIBRATION_HEIGHTS]) for z in ZETA])


if __name__ == "__main__":
    table = calibrate()
    rows = [", ".join(f"{e:.4f}" for e in table[i : i + 10]) for i in range(0, len(table), 10)]
    print("RESTITUTION_TABLE = np.array(\n    [\n" + "".join(f"        {r},\n" for r in rows) + "    ]\n)")
