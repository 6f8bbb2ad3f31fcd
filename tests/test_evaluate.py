"""Evaluation: metrics on hand-computable cases and simulated episodes, the baselines, and
`physfusion-evaluate` run for real as a subprocess on a tiny dataset with an untrained tiny model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sim
import worldmodel
from sim.scenes.stack import stands
from sim.scenes.table_fall import START_DISTANCE
from worldmodel import baselines, metrics
from worldmodel.evaluate import ConfigError, check_options, open_dataset, shuffled_captions

BIN = Path(sys.executable).with_name("physfusion-evaluate")
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "worldmodel.evaluate"]
GENERATE = Path(sys.executable).with_name("physfusion-generate")


# --- pixels -----------------------------------------------------------------------------------------


def test_psnr_of_known_noise():
    true = np.full((2, 8, 8, 3), 128, np.uint8)
    noise = np.where(np.indices((8, 8)).sum(axis=0) % 2 == 0, 10, -10)[None, :, :, None]  # +-10 levels: MSE 100
    pred = (true.astype(int) + noise).astype(np.uint8)
    np.testing.assert_allclose(metrics.psnr(pred, true), 10 * math.log10(255**2 / 100), rtol=1e-12)
    assert (metrics.psnr(true, true) == metrics.PSNR_MAX_DB).all()


def test_ssim_of_flat_frames_is_the_luminance_term():
    """Flat frames have no variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1), C1 = (0.01 * 255)^2."""
    a, b = np.full((1, 16, 16, 3), 100, np.uint8), np.full((1, 16, 16, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    np.testing.assert_allclose(metrics.ssim(a, b), (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), rtol=1e-12)


def test_ssim_is_one_for_identical_frames_and_falls_with_noise():
    frames = sim.simulate("drop", seed=0, seconds=0.2).frames  # (4, 64, 64, 3)
    np.testing.assert_allclose(metrics.ssim(frames, frames), 1.0, atol=1e-12)
    rng = np.random.default_rng(0)
    scores = []
    for sigma in (2, 8, 32):
        noisy = np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)
        scores.append(metrics.ssim(noisy, frames).mean())
    assert 1 > scores[0] > scores[1] > scores[2] > 0


# --- baselines ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drop():
    """One sphere dropped from rest, its centre falling 1 m: impact at sqrt(2 / g) = 0.45 s."""
    return sim.simulate("drop", {"num_objects": 1, "shape": "sphere", "height": 1.0, "restitution": 0.8}, seed=0)


def test_constant_acceleration_is_exact_in_free_fall(drop):
    context, horizon = 4, 5  # frames 4..8 end at 0.40 s, before the impact
    ballistic = baselines.constant_acceleration(drop, context, horizon)
    assert len(ballistic) == context + horizon and ballistic.frames is None
    assert metrics.position_error(ballistic, drop, context, 1).max() < 1e-9
    assert metrics.velocity_error(ballistic, drop, context, 1).max() < 1e-9
    # constant velocity misses the fall by g t (t + dt) / 2 at t = 0.25 s after the last context frame
    # (g t^2 / 2, and g t dt / 2 from the semi-implicit integrator's steps of dt)
    coasting = baselines.constant_velocity(drop, context, horizon)
    t, dt = 0.25, drop.provenance["timestep"]
    np.testing.assert_allclose(metrics.position_error(coasting, drop, context, 1)[-1], 9.81 * t * (t + dt) / 2, rtol=1e-9)


def test_copy_last_freezes_the_last_context_frame(drop):
    frozen = baselines.copy_last(drop, 4, 6)
    assert (frozen.frames[:4] == drop.frames[:4]).all() and (frozen.frames[4:] == drop.frames[3]).all()
    assert (frozen.positions[4:] == drop.positions[3]).all() and (frozen.velocities[4:] == 0).all()


# --- the centroid parser -------------------------------------------------------------------------------


@pytest.mark.parametrize("segmentation", [False, True], ids=["colour", "segmentation"])
def test_parser_floor_on_simulated_frames_is_small(segmentation):
    """The parser finds every body of a three-object drop within a pixel of its projected centre."""
    ep = sim.simulate("drop", {"num_objects": 3}, seed=2, segmentation=segmentation)
    colours = metrics.body_colours(ep, context=4, bodies=3)
    assert not np.isnan(colours).any()
    error = metrics.frame_position_error(ep.frames, ep, 4, colours)  # (T - 4, 3) px
    assert np.isfinite(error).mean() > 0.95
    assert np.nanmean(error) < 1.0
    # a frame with the bodies moved elsewhere is parsed far from the true centres
    shifted = metrics.frame_position_error(np.roll(ep.frames, 8, axis=2), ep, 4, colours)
    assert np.nanmean(shifted) > 6.0


# --- events ----------------------------------------------------------------------------------------------


def test_bounce_is_detected_at_the_first_frame_after_impact(drop):
    impact = math.sqrt(2 * 1.0 / 9.81)
    assert metrics.bounced(drop, 4) == math.ceil(impact * drop.fps)
    assert metrics.bounced(drop, 12) > 12  # a later bounce, lower
    assert metrics.bounced(baselines.constant_acceleration(drop, 4, 30), 4) is None


def test_collision_is_detected_when_the_simulator_says_the_balls_touch():
    for seed in range(3):
        ep = sim.simulate("collision", {"num_balls": 2}, seed=seed)
        touch = min(e.time for e in ep.events if {e.body_a, e.body_b} == {"ball0", "ball1"})
        assert metrics.collided(ep, 4) == int(np.flatnonzero(ep.times > touch)[0])
        assert metrics.bounced(ep, 4) is None
        # a predictor that stops the balls at the first predicted frame has not made them collide
        assert metrics.collided(baselines.copy_last(ep, 4, len(ep) - 4), 4) is None


def test_toppling_follows_the_centre_of_mass_criterion():
    seen = set()
    for seed in range(6):
        ep = sim.simulate("stack", seed=seed, render=False)
        standing = stands(ep.params["offsets"], ep.params["size"])
        assert (metrics.toppled(ep, 4) is None) == standing, (seed, ep.params["offsets"])
        seen.add(standing)
    assert seen == {True, False}


def test_the_cup_falls_off_the_table():
    ep = sim.simulate("table_fall", seed=0, render=False)
    frame = metrics.fell_off(ep, 4)
    fall = math.sqrt(2 * metrics.FALL_DROP / 9.81)  # s to fall FALL_DROP from rest
    edge = START_DISTANCE / ep.params["speed"]  # s, at most: the cup slows down to `speed` at the edge
    assert fall <= ep.times[frame] <= edge + fall + 2 / ep.fps  # a frame of sampling, a frame of tipping at the edge
    assert metrics.fell_off(baselines.copy_last(ep, 4, len(ep) - 4), 4) is None


def test_captions_are_shuffled_within_each_family():
    metas = [{"scene": s, "caption": f"{s} {i}"} for i, s in enumerate(["drop", "drop", "drop", "ramp", "stack", "stack"])]
    shuffled = shuffled_captions(metas, seed=0)
    assert sorted(shuffled) == [0, 1, 2, 4, 5]  # ramp has no other episode to take a caption from
    for i, caption in shuffled.items():
        assert caption != metas[i]["caption"] and caption.split()[0] == metas[i]["scene"]
    assert sorted(shuffled[i] for i in (0, 1, 2)) == ["drop 0", "drop 1", "drop 2"]


# --- the command -------------------------------------------------------------------------------------------

TINY = ["context=4", "horizon=8", "videos=2", "max_episodes=12"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A 12-episode mix of every family (1 s each) and an untrained tiny model."""
    root = tmp_path_factory.mktemp("evaluate")
    proc = subprocess.run(
        [str(GENERATE), "scene=all", "num_episodes=12", "seconds=1", "preview_episodes=0", f"out_dir={root / 'data'}"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = worldmodel.WorldModel(worldmodel.preset("nano", d_model=32, n_layer=1, n_head=2))
    return {"data": root / "data", "checkpoint": model.save(root / "ckpt" / "model.safetensors")}


def evaluate(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    # one torch thread: a tiny model's rollouts are 50x slower with two threads on a loaded 2-core machine
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*COMMAND, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_evaluate_writes_report_plots_and_videos(inputs, tmp_path):
    proc = evaluate(tmp_path, f"checkpoint={inputs['checkpoint'].parent}", f"data={inputs['data']}",
                    f"ood_data={inputs['data']}", "out_dir=eval", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # Hydra writes nothing of its own
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["report"] == str(tmp_path / "eval" / "report.json")
    assert summary["episodes"] == {"id": 12, "ood": 12}
    assert set(summary["position_error_m"]) == {"model", *baselines.BASELINES}
    assert summary["ood_id_ratio"] == pytest.approx(1.0)  # the same dataset twice
    table = proc.stderr.split("\n[id]")[1]  # after the progress bar
    assert "[ood]" in table and all(f"\n{family} " in table for family in sim.SCENES)

    report = json.loads(Path(summary["report"]).read_text())
    id_ = report["datasets"]["id"]
    assert sorted(id_["families"]) == sorted(sim.SCENES) and sorted(report["wins"]) == sorted(sim.SCENES)
    overall = id_["overall"]
    for figure in ("position_error_m", "velocity_error_m_s"):
        for name in ("model", *baselines.BASELINES):
            assert len(overall[figure][name]["curve"]) == 8 and overall[figure][name]["mean"] >= 0
    assert set(overall["psnr_db"]) == set(overall["ssim"]) == {"model", "copy_last"}
    assert set(overall["frame_position_error_px"]) == {"model", "parser_floor"}
    assert overall["frame_position_error_px"]["parser_floor"]["mean"] < 3.0
    assert id_["families"]["pour"]["bodies_not_scored"] > 0  # more beads than the model's slots
    assert set(id_["families"]["drop"]["events"]) == {"bounced"}
    assert set(id_["families"]["drop"]["events"]["bounced"]["model"]) == {"accuracy", "timing_error_s"}
    assert set(overall["events"]) == set(metrics.EVENT_FAMILIES)
    # drop and projectile have two episodes each: their captions are swapped and removed
    ablation = report["caption_ablation"]
    assert ablation["families"] == ["drop", "projectile"] and ablation["episodes"] == 4
    for variant in ("caption", "shuffled", "removed"):
        assert set(ablation[variant]["events"]) == {"bounced"} and sorted(ablation[variant]["families"]) == ["drop", "projectile"]
    per_family = [id_["families"][f]["position_error_m"]["model"]["mean"] for f in ("drop", "projectile")]
    assert ablation["caption"]["position_error_m"] == pytest.approx(np.mean(per_family))  # two episodes each
    # expert use: per family and modality, each row the shares of the experts (summing to 1)
    use = report["expert_use"]
    assert sorted(use["by_family"]) == sorted(sim.SCENES)
    assert {"text", "video", "audio", "action", "state", "sep"} <= set(use["overall"])
    for shares in [*use["overall"].values(), *use["by_family"]["drop"].values()]:
        assert len(shares) == 4 and sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert "expert use by modality" in proc.stderr
    assert len(report["plots"]) == 2 and len(report["videos"]) == 4
    for path in report["plots"] + report["videos"]:
        assert Path(path).stat().st_size > 1000, path
    assert Path(report["plots"][0]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "override, named",
    [
        ({"checkpoint": "missing.safetensors"}, "'checkpoint'"),
        ({"checkpoint": None}, "'checkpoint'"),
        ({"data": "no/such/dir"}, "'data'"),
        ({"horizon": "100"}, "'horizon'"),
        ({"context": "2"}, "'context'"),
        ({"temperature": "-1"}, "'temperature'"),
        ({"gate_override": "-0.5"}, "'gate_override'"),
        ({"override_reach": "-0.01"}, "'override_reach'"),
    ],
    ids=["no-checkpoint-file", "checkpoint-missing", "no-data", "horizon-too-long", "context-too-short", "temperature", "gate-override", "override-reach"],
)
def test_bad_input_is_refused_naming_the_parameter(inputs, tmp_path, override, named):
    """Through the compose API: the message names the parameter, its value and what is allowed."""
    from hydra import compose, initialize_config_module

    values = {"checkpoint": str(inputs["checkpoint"]), "data": str(inputs["data"]), "out_dir": str(tmp_path / "eval")} | override
    overrides = [f"{k}={v}" for k, v in values.items() if v is not None]
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    with pytest.raises(ConfigError, match="allowed") as err:
        opts = check_options(cfg)
        open_dataset("data", opts["data"], opts, worldmodel.preset("nano"))
    assert named in str(err.value)
    if "horizon" in override:
        assert "20" in str(err.value)  # the episodes' length
    assert not (tmp_path / "eval").exists()


def test_bad_input_exits_with_status_2(inputs, tmp_path):
    proc = evaluate(tmp_path, "checkpoint=nowhere/model.safetensors", f"data={inputs['data']}", "out_dir=eval")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'checkpoint'" in lines[0] and "nowhere" in lines[0] and "allowed" in lines[0]
    assert proc.stdout == "" and not (tmp_path / "eval").exists()
