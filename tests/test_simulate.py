"""Behaviour every scene family shares: shapes, determinism, splits, bad input, annotations."""

import math

import numpy as np
import pytest

import sim
from conftest import family_params

FAMILIES = family_params()


def small(scene, **kw):
    return sim.simulate(scene, seed=kw.pop("seed", 0), seconds=kw.pop("seconds", 0.5), width=32, height=32, **kw)


@pytest.mark.parametrize("scene", FAMILIES)
def test_episode_shapes_and_contents(scene):
    ep = small(scene)
    T, n = len(ep), len(ep.body_names)
    assert T == 10 and ep.times.shape == (T,) and np.allclose(np.diff(ep.times), 1 / 20)
    assert ep.frames.shape == (T, 32, 32, 3) and ep.frames.dtype == np.uint8
    assert ep.states.shape == (T, n, 13) and np.isfinite(ep.states).all()
    quat_norm = np.linalg.norm(ep.states[..., 3:7], axis=-1)
    np.testing.assert_allclose(quat_norm, 1.0, atol=1e-6)
    assert set(sim.get_family(scene).params.names()) <= set(ep.params)
    assert ep.caption and ep.caption[0].isupper()
    assert ep.audio.shape == (round(T / 20 * ep.audio_rate),) and np.abs(ep.audio).max() <= 1
    assert {"mujoco", "scene_hash", "physfusion"} <= set(ep.provenance)
    assert ep.frames.std() > 1, "frames are blank"


@pytest.mark.parametrize("scene", FAMILIES)
def test_same_seed_same_episode(scene):
    a, b, c = small(scene, seed=3), small(scene, seed=3), small(scene, seed=4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.states, b.states)
    assert a.params == b.params and a.provenance == b.provenance
    assert a.params != c.params


@pytest.mark.parametrize("scene", FAMILIES)
def test_reused_render_resources_give_the_frames_of_fresh_ones(scene):
    # a worker's second episode of a family reuses the first one's render context and scene
    from sim import render

    kw = dict(seed=3, depth=True, segmentation=True, shadows=True)
    render._free_idle_gl()
    fresh = small(scene, **kw)
    render._free_idle_gl()
    small(scene, seed=4, seconds=0.1, depth=True, segmentation=True, shadows=True)
    reused = small(scene, **kw)
    for name in ("frames", "depth", "segmentation"):
        np.testing.assert_array_equal(getattr(reused, name), getattr(fresh, name), err_msg=name)


def test_render_resources_are_reused_within_a_family():
    from sim import render

    render._free_idle_gl()
    small("drop", seed=4, seconds=0.1)
    pooled = [r.mjr_context for r in render._IDLE_GL[render._gl_key(32, 32)]]
    small("drop", seed=3, seconds=0.1, params={"size": 0.25})
    assert [r.mjr_context for r in render._IDLE_GL[render._gl_key(32, 32)]] == pooled


def test_interleaved_renderers_each_draw_their_own_scene():
    # two renderers of one size alive at once (a vector env): each frame must come from its own
    # OpenGL context, whichever rendered last, and equal mujoco.Renderer's own rendering
    from sim.engine import Simulation
    from sim.render import FrameRenderer

    sims = [Simulation(sim.get_family(s).build(sim.realize_params(s, None, 1)), 20) for s in ("drop", "pendulum")]
    renderers = [FrameRenderer(s.model, 32, 32, s.body_ids) for s in sims]
    try:
        frames = [[r.render(s.data)[0] for r, s in zip(renderers, sims)] for _ in range(2)]
        stock = [r._renderer.render() for r in renderers]  # mujoco.Renderer.render, after the fast path
        again = [r.render(s.data)[0] for r, s in zip(renderers, sims)]
    finally:
        for r in renderers:
            r.close()
    for k in range(2):
        np.testing.assert_array_equal(frames[0][k], stock[k])
        np.testing.assert_array_equal(frames[1][k], stock[k])
        np.testing.assert_array_equal(again[k], stock[k])
    assert not np.array_equal(stock[0], stock[1])


@pytest.mark.parametrize("scene", FAMILIES)
def test_splits_sample_their_ranges(scene):
    family = sim.get_family(scene)
    for i in range(20):
        rng = np.random.default_rng(i)
        train, ood = family.params.resolve(None, rng, "train"), family.params.resolve(None, rng, "ood")
        for p in family.params.params:
            if p.kind != "float" or p.ood is None:
                continue
            lo, hi = p.train
            assert lo <= train[p.name] <= hi
            assert not (lo < ood[p.name] < hi), f"{p.name}={ood[p.name]} is out-of-distribution inside {p.train}"


@pytest.mark.parametrize("scene", FAMILIES)
def test_out_of_range_values_are_rejected_by_name(scene):
    family = sim.get_family(scene)
    checked = 0
    for p in family.params.params:
        if p.kind in ("float", "int") and math.isfinite(p.valid[1]):
            bad = p.valid[1] + 1
            with pytest.raises(sim.ParamError, match=p.name) as err:
                sim.simulate(scene, {p.name: bad}, render=False, seconds=0.1)
            assert f"{bad:g}" in str(err.value) or repr(bad) in str(err.value)
            checked += 1
    assert checked > 0


def test_bad_input_messages():
    with pytest.raises(sim.ParamError, match=r"'scene'.*'dorp'.*one of drop"):
        sim.simulate("dorp")
    with pytest.raises(sim.ParamError, match=r"unknown parameter.*'colour'.*allowed: num_objects"):
        sim.simulate("drop", {"colour": "red"})
    with pytest.raises(sim.ParamError, match=r"'restitution': got 1\.5; allowed: a number in \[0, 1\]"):
        sim.simulate("drop", {"restitution": 1.5})
    with pytest.raises(sim.ParamError, match=r"'mass': got -1.*\(0, 1000\]"):
        sim.simulate("drop", {"mass": -1})
    with pytest.raises(sim.ParamError, match=r"'shape': got 'cone'"):
        sim.simulate("drop", {"shape": "cone"})
    with pytest.raises(sim.ParamError, match=r"'split'"):
        sim.simulate("drop", split="test")
    with pytest.raises(sim.ParamError, match=r"'fps'"):
        sim.simulate("drop", fps=0)


def test_counterfactual_keeps_everything_but_the_changed_parameter():
    base = sim.simulate("drop", {"num_objects": 2}, seed=5, render=False)
    heavy = sim.simulate("drop", {"num_objects": 2}, seed=5, render=False, counterfactual={"mass": base.params["mass"] * 2})
    changed = {k for k in base.params if base.params[k] != heavy.params[k]}
    assert changed == {"mass"}
    np.testing.assert_array_equal(base.states[0], heavy.states[0])
    with pytest.raises(sim.ParamError, match="mass"):
        sim.simulate("drop", seed=5, counterfactual={"mass": 0})


def test_depth_segmentation_and_camera_agree():
    ep = sim.simulate("drop", {"num_objects": 1, "shape": "sphere", "size": 0.2, "height": 0.5}, seed=1,
                      seconds=0.3, width=64, height=64, depth=True, segmentation=True)
    assert ep.segmentation.dtype == np.int32 and set(np.unique(ep.segmentation)) == {0, 1}
    for t in range(len(ep)):
        rows, cols = np.nonzero(ep.segmentation[t] == 1)
        u, v = ep.camera.project(ep.positions[t, 0])
        assert abs(cols.mean() + 0.5 - u) < 1.5 and abs(rows.mean() + 0.5 - v) < 1.5
        # depth at the object's pixels ~ distance along the optical axis to the sphere's front
        z_cam = (ep.camera.rotation @ (ep.positions[t, 0] - ep.camera.position))[2]
        assert z_cam - 0.1 - 0.02 < ep.depth[t][rows, cols].min() < z_cam
    assert (ep.depth > 0).all()


def test_contact_events_and_audio():
    ep = sim.simulate("drop", {"num_objects": 1, "shape": "sphere", "height": 0.8, "restitution": 0.7,
                               "mass": 1.0}, seed=0, seconds=1.5, render=False)
    impact = math.sqrt(2 * 0.8 / 9.81)
    first = ep.events[0]
    assert {first.body_a, first.body_b} == {"floor", "object0"}
    assert abs(first.time - impact) < 0.01
    # impulse = m * (v_in + v_out) = m * (1 + e) * sqrt(2 g h)
    assert first.impulse == pytest.approx(1.0 * 1.7 * math.sqrt(2 * 9.81 * 0.8), rel=0.1)
    onset = round(first.time * ep.audio_rate)
    assert np.abs(ep.audio[: onset - 10]).max() == 0 and np.abs(ep.audio[onset : onset + 400]).max() > 0.1


def test_episode_slice_keeps_absolute_time():
    ep = sim.simulate("drop", {"num_objects": 1, "height": 0.5}, seed=0, seconds=1.0, width=32, height=32)
    part = ep.slice(5, 15)
    assert len(part) == 10 and part.times[0] == ep.times[5]
    np.testing.assert_array_equal(part.frames, ep.frames[5:15])
    assert all(0.25 <= e.time < 0.75 for e in part.events)
    assert len(part.audio) == round(0.5 * ep.audio_rate)


@pytest.mark.parametrize("shape", ["box", "cylinder", "capsule"])
def test_a_dropped_body_comes_to_rest_at_its_stated_radius_above_the_floor(shape):
    """A drop's box, cylinder or capsule falls upright and lands flat: once it rests, its centre is
    at `body_properties`' radius above the floor (within 2 mm), the sphere the world model's
    contacts stand it on; as a sphere of half its extent, a capsule would sink by half of it."""
    ep = sim.simulate("drop", {"num_objects": 1, "shape": shape, "size": 0.16, "height": 0.5, "restitution": 0.3}, seed=0, seconds=2.0, render=False)
    radius = sim.body_properties(ep)[0, 0]
    assert ep.positions[-1, 0, 2] == pytest.approx(radius, abs=0.002)
    if shape == "capsule":
        assert ep.positions[-1, 0, 2] - 0.16 / 2 > 0.07


def test_body_properties_follow_the_realised_parameters():
    """Per body, in body order: a sphere's radius (half its size), or the centre's height of a
    dropped body resting upright, the mass, the restitution, the friction, the hinge damping; NaN
    where the family sets none for that body (the push paddle, a thrown box's radius, a stack's
    restitution, every damping but a pendulum's); collision's floor is frictionless."""
    nan = np.nan
    hit = sim.simulate("collision", {"num_balls": 2, "size": 0.2, "masses": [0.5, 1.5], "restitution": 0.7}, seed=0, seconds=0.2, width=32, height=32)
    np.testing.assert_allclose(sim.body_properties(hit), [[0.1, 0.5, 0.7, 0.0, nan], [0.1, 1.5, 0.7, 0.0, nan]])
    drop = sim.simulate("drop", {"num_objects": 2, "shape": "sphere", "size": 0.1, "mass": 0.4, "restitution": 0.6, "friction": 0.7}, seed=0, seconds=0.2, width=32, height=32)
    other = drop.params["others"][0]
    other_radius = other["size"] if other["shape"] == "capsule" else other["size"] / 2  # its centre's height when it rests upright
    np.testing.assert_allclose(sim.body_properties(drop), [[0.05, 0.4, 0.6, 0.7, nan], [other_radius, other["mass"], 0.6, 0.7, nan]])
    box = sim.body_properties(sim.simulate("drop", {"num_objects": 1, "shape": "box", "size": 0.12, "mass": 0.4}, seed=0, seconds=0.2, width=32, height=32))
    assert box[0, 0] == pytest.approx(0.06) and box[0, 1] == 0.4
    thrown = sim.body_properties(sim.simulate("projectile", {"shape": "box"}, seed=0, seconds=0.2, width=32, height=32))
    assert np.isnan(thrown[0, 0])  # launched, it may land on an edge: its touching distance depends on its turn
    pushed = sim.simulate("push", {"num_objects": 1, "size": 0.08, "mass": 0.5, "friction": 0.4}, seed=0, seconds=0.2, width=32, height=32)
    push = sim.body_properties(pushed)
    assert np.isnan(push[0]).all() and np.isnan(push[1, 0]) and push[1, 1] == 0.5 and np.isnan(push[1, 2]) and push[1, 3] == 0.4
    swing = sim.simulate("pendulum", {"links": 2, "size": 0.1, "mass": 0.7, "damping": 0.12}, seed=0, seconds=0.2, width=32, height=32)
    np.testing.assert_allclose(sim.body_properties(swing), [[0.05, 0.7, nan, nan, 0.12]] * 2)


def test_roll_shares_are_the_simulators_inertia_ratios():
    """sim.roll_shares gives 1 / (1 + m r^2 / I) from the compiled model's mass and principal
    inertia (its least: about the axis it rolls on) and the geom's radius, for the bodies whose
    rolling the family fixes: thrown, dropped and colliding balls and a ramp's cylinder (laid
    across the slope); 1 for a box, for a dropped cylinder or capsule and a thrown cylinder
    (landing upright, on its base: it slides); NaN for a thrown capsule, which lands on its
    rounded end and tumbles."""
    import mujoco

    for scene, params, rolls in (
        ("projectile", {"shape": "sphere"}, True),
        ("drop", {"num_objects": 1, "shape": "sphere"}, True),
        ("collision", {"num_balls": 2}, True),
        ("ramp", {"shape": "cylinder"}, True),
        ("projectile", {"shape": "capsule"}, False),
    ):
        realized = sim.realize_params(scene, params, 0)
        built = sim.get_family(scene).build(realized)
        ep = sim.simulate(scene, params, seed=0, seconds=0.1, width=32, height=32)
        shares = sim.roll_shares(ep)
        if not rolls:
            assert np.isnan(shares[0]), (scene, params)
            continue
        model = mujoco.MjModel.from_xml_string(built.mjcf)
        for i, name in enumerate(built.tracked):
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
            radius = model.geom_size[model.body_geomadr[body], 0]
            m, inertia = model.body_mass[body], model.body_inertia[body].min()
            assert shares[i] == pytest.approx(1 / (1 + m * radius**2 / inertia), rel=1e-6), (scene, params, i)
    for scene, params in (("ramp", {"shape": "box"}), ("projectile", {"shape": "box"}), ("drop", {"num_objects": 1, "shape": "capsule"}),
                           ("projectile", {"shape": "cylinder"}), ("stack", {})):
        assert (sim.roll_shares(sim.simulate(scene, params, seed=0, seconds=0.1, width=32, height=32)) == 1.0).all(), (scene, params)


def _actuated_bodies(scene: str, seed: int) -> list[bool]:
    """Per tracked body, from the compiled MJCF: an actuator drives one of its joints or an
    ancestor's, directly or through a joint equality constraint (a gear mesh)."""
    import mujoco

    built = sim.get_family(scene).build(sim.realize_params(scene, None, seed))
    model = mujoco.MjModel.from_xml_string(built.mjcf)
    driven = {int(model.actuator_trnid[a, 0]) for a in range(model.nu) if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT}
    while True:  # joints tied to a driven joint by an equality constraint
        tied = {int(model.eq_obj1id[e]) for e in range(model.neq) if model.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and int(model.eq_obj2id[e]) in driven}
        tied |= {int(model.eq_obj2id[e]) for e in range(model.neq) if model.eq_type[e] == mujoco.mjtEq.mjEQ_JOINT and int(model.eq_obj1id[e]) in driven}
        if tied <= driven:
            break
        driven |= tied
    driven_bodies = {int(model.jnt_bodyid[j]) for j in driven}
    out = []
    for name in built.tracked:
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        chain = []
        while body > 0:
            chain.append(body)
            body = int(model.body_parentid[body])
        out.append(any(b in driven_bodies for b in chain))
    return out


@pytest.mark.parametrize("scene", sorted(sim.SCENES))
def test_driven_bodies_are_the_actuated_ones(scene):
    """sim.driven_bodies names exactly the tracked bodies an actuator moves, read off the compiled model."""
    ep = sim.simulate(scene, seed=3, seconds=0.1, width=32, height=32)
    assert sim.driven_bodies(ep).tolist() == _actuated_bodies(scene, 3)


def test_a_driven_paddle_holds_its_command_through_the_push():
    """push's paddle (driven) moves at its commanded velocity while it pushes the cube: its servo
    (600 N s/m on 3 kg, a 5 ms time constant) gives back within a frame what the contact takes."""
    ep = sim.simulate("push", {"num_objects": 1, "mass": 1.0, "push_speed": 0.4, "push_distance": 0.3}, seed=0, seconds=1.0, fps=20, width=32, height=32)
    assert sim.driven_bodies(ep).tolist() == [True, False]
    command = ep.actions[:, 3:]  # the controls after the external force (3): the paddle's x and y velocity, m/s
    moving = np.abs(command).sum(-1) > 0  # frames whose command is on
    moving[1:] &= moving[:-1]  # and was on the frame before (the servo has caught up)
    cube_speed = np.linalg.norm(ep.states[:, 1, 7:9], axis=-1)
    assert (cube_speed[moving] > 0.2).any()  # it pushes the cube
    np.testing.assert_allclose(ep.states[moving, 0, 7:9], command[moving], atol=0.02)
