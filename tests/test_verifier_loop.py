"""The GenV loop and `physfusion-verify`, for real: MuJoCo oracle, an untrained tiny world model
(its answers are wrong, so the loop must catch and correct them), files, and subprocess runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import worldmodel
from verifier import parse_query, simulate_answer, verify
from verifier.answer import agree
from verifier.loop import aggregate, least_violating, sample_rollouts
from verifier.oracle import seconds_for, simulate_video

BIN = Path(sys.executable).with_name("physfusion-verify")
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "verifier.cli"]
DROP = "A ball is released 0.6 m above the floor. How long does it take to land?"
SHORT = "A ball is let go 1 m above the floor. What is its height after 0.25 s?"  # a 7-frame horizon


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    worldmodel.WorldModel(worldmodel.preset("nano", d_model=32, n_layer=1, n_head=2)).save(path)
    return path


def run(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *overrides], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_without_a_model_the_simulator_answers():
    result = verify(DROP, model=None, oracle="sim")
    assert result.verdict == "simulated" and result.source == "simulator"
    assert result.answer.value == pytest.approx(np.sqrt(2 * 0.6 / 9.81), rel=0.02) and result.answer.unit == "s"
    assert result.checks["consistent"]  # the oracle's own trajectory obeys the laws


def test_untrained_model_is_checked_and_corrected(tiny_checkpoint):
    model = worldmodel.load(tiny_checkpoint)
    query = parse_query(SHORT)
    truth, _ = simulate_answer(query)
    result = verify(query, model, oracle="sim", samples=2, max_rethinks=1, seed=0)
    assert result.verdict in ("corrected", "unverified", "verified")
    rollouts = [a for r in result.rounds for a in r["answers"]]
    assert len(result.rounds) in (1, 2) and all(len(r["answers"]) == 2 for r in result.rounds)
    if result.verdict == "unverified":  # after max_rethinks: the simulator's answer is the correction
        assert len(result.rounds) == 2 and result.source == "simulator"
        assert result.answer.value == truth.value
        survived = any(r["survivors"] for r in result.rounds)
        # either the survivors' aggregate disagreed, or nothing passed the checks
        assert not survived or not agree(result.model_answer, truth, 0.05, 0.02)
    else:  # an answer the loop accepts must agree with the simulator
        assert abs(result.answer.value - truth.value) <= max(0.05 * abs(truth.value), 0.02)
    assert result.predicted is not None and len(result.predicted) == len(result.simulated)
    assert result.simulator["disagreement"]["trajectory_rmse_m"] >= 0
    assert set(result.checks["checks"]) >= {"permanence", "continuity", "plausibility"}
    assert len(rollouts) == 2 * len(result.rounds)


def test_intrinsic_checks_alone_without_the_oracle(tiny_checkpoint):
    model = worldmodel.load(tiny_checkpoint)
    result = verify(SHORT, model, oracle="none", samples=2, max_rethinks=0, seed=1)
    assert result.simulator is None and result.simulated is None
    assert result.verdict in ("verified", "unverified")
    if result.verdict == "unverified":
        assert result.source == "model"  # no simulator to correct it
    failed = result.rounds[0]["failed"]
    assert (result.verdict == "verified") == any(not f for f in failed)


def test_when_nothing_passes_the_answer_is_the_least_violating_half(tiny_checkpoint):
    """When no rollout passes the checks, the loop still answers, from the plausible rollouts with
    the lowest violation scores, and says it is unverified. (An untrained model's prior falls
    exactly, so its dynamics head is given a constant extra step of one step unit in every
    component, and free flight is off so that the head steps the falling ball: every rollout then
    falls wrongly.)"""
    model = worldmodel.load(tiny_checkpoint, free_flight_tolerance=0)
    with torch.no_grad():
        model.dynamics_head.mlp[2].bias[:6] += 1.0  # the moving step's mean, step units
    query = parse_query(SHORT)
    result = verify(query, model, oracle="none", samples=4, max_rethinks=0, seed=2)
    pool = [a for a in result.rounds[0]["answers"]]
    assert result.verdict == "unverified" and all(result.rounds[0]["failed"])  # no rollout passed every check
    samples = sample_rollouts(model, simulate_video(query, seed=2, size=model.cfg.image_size, seconds=seconds_for(query)).slice(0, 4),
                              query, 0, context=4, horizon=len(result.predicted) - 4, samples=4, temperature=1.0, seed=2)
    assert [s.answer.value if s.answer else None for s in samples] == pool  # the same draws
    best = least_violating(samples)
    assert 1 <= len(best) <= 2 and all(s.plausible for s in best)
    worst_kept = max(s.report.score for s in best)
    kept = {id(s) for s in best}
    assert all(s.report.score >= worst_kept for s in samples if s.plausible and s.answer is not None and id(s) not in kept)
    assert result.answer == aggregate([s.answer for s in best]) and result.source == "model"


def test_cli_answers_from_the_simulator_and_writes_report_and_video(tmp_path):
    proc = run(tmp_path, "query=A rubber ball with restitution 0.7 falls from 1.1 m. How high does it bounce?",
               "out_dir=out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last == json.loads((tmp_path / "out" / "report.json").read_text())
    assert last["verdict"] == "simulated" and last["answer"]["unit"] == "m"
    assert last["answer"]["value"] == pytest.approx(0.49 * 1.1, rel=0.03)
    assert last["simulator"]["answer"]["value"] == last["answer"]["value"]
    assert Path(last["video"]).stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # Hydra writes nothing of its own


def test_cli_with_a_checkpoint_runs_the_loop(tmp_path, tiny_checkpoint):
    proc = run(tmp_path, f"query={SHORT}", f"checkpoint={tiny_checkpoint}", "samples=2", "max_rethinks=0",
               "out_dir=out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["verdict"] in ("verified", "unverified")
    assert report["simulator"]["answer"]["unit"] == "m" and len(report["rounds"]) == 1
    assert (tmp_path / "out" / "video.mp4").exists()


def test_cli_batch_of_queries_from_jsonl(tmp_path):
    (tmp_path / "q.jsonl").write_text(
        json.dumps("A 1 kg ball at 2 m/s hits a resting 1 kg ball, restitution 1. What are the velocities after?") + "\n"
        + json.dumps({"scene": "pendulum", "params": {"length": 0.4, "angle_deg": 12}, "question": "period"}) + "\n"
        + json.dumps("A ball is dropped from 9 m. When does it land?") + "\n")
    proc = run(tmp_path, "query_file=q.jsonl", "out_dir=batch", "video=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["queries"] == 3 and summary["verdicts"] == {"simulated": 2, "error": 1}
    lines = [json.loads(x) for x in (tmp_path / "batch" / "reports.jsonl").read_text().splitlines()]
    assert lines[0]["answer"]["value"] == pytest.approx([0.0, 2.0], abs=0.03)
    assert "'height': got 9.0" in lines[2]["error"]


@pytest.mark.parametrize("overrides,message", [
    (["query=Where is the moon?"], "which scene"),
    ([f"query={DROP}", "oracle=maybe"], "'oracle': got 'maybe'"),
    ([f"query={DROP}", "checkpoint=missing.safetensors"], "'checkpoint': got 'missing.safetensors'"),
    ([], "exactly one of them"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, overrides, message):
    proc = run(tmp_path, *overrides, "out_dir=out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_rethink_benchmark_runs_on_any_checkpoint(tiny_checkpoint):
    proc = subprocess.run([sys.executable, "benchmarks/verifier_rethink.py", "--checkpoint", str(tiny_checkpoint),
                           "--queries", "1", "--samples", "2", "--max-rethinks", "1"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["queries"] == 1
    assert 0 <= summary["single_sample_accuracy"] <= 1 and 0 <= summary["rethink_accuracy"] <= 1
    assert "single-sample" in proc.stdout and "re-think" in proc.stdout


def test_cli_takes_a_structured_query(tmp_path):
    query = json.dumps({"scene": "projectile", "params": {"speed": 3.0, "angle_deg": 40.0, "height": 0.2},
                        "question": "range"})
    proc = run(tmp_path, f"query={query}", "out_dir=out", "video=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    a = np.radians(40.0)
    vz = 3.0 * np.sin(a)
    expected = 3.0 * np.cos(a) * (vz + np.sqrt(vz**2 + 2 * 9.81 * 0.2)) / 9.81
    assert report["answer"]["value"] == pytest.approx(expected, rel=0.02)
    assert report["video"] is None and not (tmp_path / "out" / "video.mp4").exists()


def test_video_panels_and_drawn_trajectories(tmp_path):
    from verifier.video import PREDICTED, SIMULATED, compose, write_video

    result = verify("A ball is thrown at 3 m/s at 45 degrees. How far does it land?")
    simulated = result.simulated
    frames = compose(None, simulated, scale=4)
    assert frames.shape == (len(simulated), 256, 256, 3)
    plain = simulated.frames[-1].repeat(4, 0).repeat(4, 1)
    drawn = (frames[-1] != plain).any(-1)  # the pixels the trajectory overwrote
    assert drawn.sum() > 50 and (frames[-1][drawn] == SIMULATED).all()
    u, v = np.round(simulated.camera.project(simulated.positions[len(simulated) // 2, 0]) * 4).astype(int)
    assert drawn[v - 2 : v + 3, u - 2 : u + 3].any()  # the path passes where the ball was
    both = compose(simulated, simulated, scale=4)  # predicted | simulated
    assert both.shape[2] == 2 * 256 + 4 and (both[-1, :, :256] == PREDICTED).all(-1).sum() > 50
    assert Path(write_video(tmp_path / "v.mp4", simulated, simulated)).stat().st_size > 1000
