"""physfusion-rlpf: real subprocess runs from a tiny saved world model with tiny settings (a few
queries, 4-frame horizons, groups of 3), the config through Hydra's compose API, and the
benchmark script end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import load_file

import worldmodel as wm
from conftest import last_json, run_command
from rlpf.cli import ConfigError, check_options
from rlpf.queries import FAMILIES, QUESTION_KINDS
from worldmodel.train import CRASH_ENV

TINY = ["train_queries=4", "eval_queries=2", "eval_samples=1", "horizon=4", "group_size=3", "queries_per_step=2", "min_reward_std=1e-9", "progress=false"]
ENV = {"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}


def run(args, cwd, env=None, check=True):
    return run_command("physfusion-rlpf", args, cwd, env={**ENV, **(env or {})}, check=check)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlpf")
    torch.manual_seed(0)
    wm.WorldModel(wm.preset("nano", d_model=32, n_layer=1, n_head=2)).save(root / "start.safetensors")
    return root


def weights_equal(a, b) -> bool:
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rlpf_run_reports_before_and_after_logs_and_checkpoints(workdir):
    s = last_json(run(["checkpoint=start.safetensors", "steps=2", "out_dir=runs/rl", *TINY], workdir))
    for side in ("before", "after"):
        for key in ("disagreement_rate", "violation_rate", "failed_checks", "position_error", "psnr"):
            assert isinstance(s[side][key], float), (side, key)
        assert 0 <= s[side]["disagreement_rate"] <= 1 and s[side]["rollouts"] == 2
        by_family = s[side]["disagreement_by_family"]
        assert set(by_family) <= set(FAMILIES) and all(0 <= v <= 1 for v in by_family.values()), by_family
        misses = s[side]["answer_miss_by_family"]  # the families asking a number, and how far off they are
        assert set(misses) == {f for f in by_family if f not in QUESTION_KINDS} and all(v >= 0 for v in misses.values()), misses
        by_check = s[side]["violations_by_check"]  # a rollout violates when it fails any check: the rate lies between the largest and the sum
        assert {"continuity", "permanence"} <= set(by_check) and all(0 <= v <= 1 for v in by_check.values()), by_check
        assert max(by_check.values()) <= s[side]["violation_rate"] <= sum(by_check.values()) + 1e-9, by_check
        assert s[side]["failed_checks"] == pytest.approx(sum(by_check.values())), by_check  # the mean count is the sum of the rates
    assert s["baseline"] == "rlpf" and s["steps"] == 2 and s["groups"] == 4 and s["simulator_episodes"] == 4
    assert s["skipped_groups"] < s["groups"] and s["rollouts"] == 12  # a group whose gate keeps every step rolls out the same states G times: skipped
    out = workdir / "runs/rl"
    assert not weights_equal(s["checkpoint"], workdir / "start.safetensors")  # it trained
    assert wm.load(s["checkpoint"]).cfg.d_model == 32
    assert json.loads((out / "report.json").read_text()) == s
    run_def = json.loads((out / "run.json").read_text())  # options at the value runs from before them had are left out: those runs still resume
    assert "rollout_state_target" not in run_def and set(run_def["reward_weights"]) == {"trajectory", "events", "violations", "answer"}
    weights = load_file(s["checkpoint"])
    assert run_def["spread_lr"] == 0.02 and run_def["learn_frame_spread"] is True and run_def["beta"] == 0.01
    assert weights["step_spread"].item() != 0.0 and weights["frame_spread"].item() != 0.0  # both learnt by default
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    for tag in ("reward/mean", "policy/kl", "loss/frame_nll", "loss/rollout_state_loss", "rollouts/psnr", "rollouts/disagreement_rate", "train/policy_grad_norm", "policy/beta", "policy/step_spread", "policy/frame_spread", "groups/skipped_total", "eval/disagreement_rate"):
        assert tag in tags, tag


def test_flat_groups_are_skipped_and_counted(workdir):
    args = [a for a in TINY if not a.startswith("min_reward_std")]
    s = last_json(run(["checkpoint=start.safetensors", "steps=1", "out_dir=runs/flat", "min_reward_std=1e9", *args], workdir))
    assert s["groups"] == 2 and s["skipped_groups"] == 2


def test_a_gate_knob_is_set_on_the_start_and_kept_in_the_fine_tuned_checkpoint(workdir):
    s = last_json(run(["checkpoint=start.safetensors", "steps=1", "out_dir=runs/floor", "floor_support=1", "spread_lr=0", *TINY], workdir))
    assert wm.load(workdir / "start.safetensors").cfg.floor_support == 0.0
    assert wm.load(s["checkpoint"]).cfg.floor_support == 1.0
    run_def = json.loads((workdir / "runs/floor/run.json").read_text())
    assert run_def["floor_support"] == 1
    weights = load_file(s["checkpoint"])
    assert "spread_lr" not in run_def and "learn_frame_spread" not in run_def  # held, as runs before them: they still resume
    assert weights["step_spread"].item() == weights["frame_spread"].item() == 0.0


def test_the_simulator_target_and_the_answer_miss_term_run_and_define_the_run(workdir):
    args = ["checkpoint=start.safetensors", "steps=1", "out_dir=runs/resim", "rollout_state_target=simulator", "reward_weights.answer_miss=2", *TINY]
    s = last_json(run(args, workdir))
    assert s["steps"] == 1 and not weights_equal(s["checkpoint"], workdir / "start.safetensors")
    run_def = json.loads((workdir / "runs/resim/run.json").read_text())
    assert run_def["rollout_state_target"] == "simulator" and run_def["reward_weights"]["answer_miss"] == 2


def test_interrupted_run_resumes_exactly(workdir):
    args = ["checkpoint=start.safetensors", "steps=4", "ckpt_every=2", "kl_target=1e-6", "spread_lr=0.05", *TINY]  # an adaptive beta and learnt spreads, resumed too
    whole = last_json(run([*args, "out_dir=runs/whole"], workdir))
    crashed = run([*args, "out_dir=runs/crash"], workdir, env={CRASH_ENV: "3"}, check=False)
    assert crashed.returncode == 3 and not (workdir / "runs/crash/report.json").exists()
    resumed = last_json(run([*args, "out_dir=runs/crash"], workdir))
    assert resumed["resumed_from"] == 2
    assert weights_equal(whole["checkpoint"], resumed["checkpoint"])
    assert resumed["after"] == whole["after"] and resumed["skipped_groups"] == whole["skipped_groups"]
    state = lambda name: json.loads((workdir / f"runs/{name}/checkpoints/step-000004/state.json").read_text())
    assert state("whole")["buffer"] == state("crash")["buffer"]
    assert state("whole")["beta"] == state("crash")["beta"] > 0.01  # the KL ran above its target: beta rose from its floor
    weights = load_file(whole["checkpoint"])
    assert weights["step_spread"].item() != 0.0 and weights["frame_spread"].item() != 0.0 and state("whole")["run"]["spread_lr"] == 0.05  # the policy gradient moved both
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert {"policy/step_spread", "policy/frame_spread"} <= set(EventAccumulator(str(workdir / "runs/whole/tb")).Reload().Tags()["scalars"])
    refused = run([*args, "out_dir=runs/crash", "beta=0.5"], workdir, check=False)
    assert refused.returncode == 2 and "different beta" in refused.stderr


@pytest.mark.parametrize("baseline", ["rlpf", "sft"])
def test_a_diverging_run_stops_with_an_error_naming_lr_and_finite_checkpoints(workdir, baseline):
    """lr 1e30: the weights blow up within a few steps, and the run stops with exit 2 and a message
    naming lr (non-finite rollouts, or MAX_NONFINITE_STEPS skipped updates), not a traceback; the
    skipped updates wrote nothing, so every checkpoint's weights are finite."""
    out = f"runs/diverge-{baseline}"
    args = ["checkpoint=start.safetensors", "steps=30", "ckpt_every=1", f"out_dir={out}", f"baseline={baseline}", *TINY, "lr=1e30", "min_lr=1e30", "warmup_steps=0"]
    proc = run(args, workdir, check=False)
    assert proc.returncode == 2 and "lr: fine-tuning diverged at lr 1e+30" in proc.stderr and "Traceback" not in proc.stderr
    ckpts = sorted((workdir / out / "checkpoints").iterdir())
    assert ckpts and int(ckpts[-1].name.split("-")[1]) < 30  # it stopped early
    for ckpt in ckpts:
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())
    assert not (workdir / out / "report.json").exists()


def test_sft_baseline_uses_the_same_episodes_and_steps(workdir):
    s = last_json(run(["checkpoint=start.safetensors", "steps=2", "out_dir=runs/sft", "baseline=sft", "spread_lr=0.05", *TINY], workdir))
    assert s["baseline"] == "sft" and s["simulator_episodes"] == 4 and s["groups"] == 0 and s["rollouts"] == 0
    assert load_file(s["checkpoint"])["step_spread"].item() == 0.0  # no supervised loss reaches the rollouts' spread
    assert not weights_equal(s["checkpoint"], workdir / "start.safetensors")
    assert set(s["before"]) == set(s["after"])


def test_bad_input_exits_2_naming_the_parameter_and_writes_nothing(workdir):
    proc = run(["checkpoint=start.safetensors", "out_dir=runs/bad", *TINY, "group_size=1"], workdir, check=False)
    assert proc.returncode == 2 and "parameter 'group_size': got 1; allowed: an integer >= 2" in proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "runs/bad").exists()


@pytest.mark.parametrize(
    "override,message",
    [
        ("checkpoint=missing.safetensors", "parameter 'checkpoint': got"),
        ("clip=1.5", "parameter 'clip': got 1.5; allowed: a number in (0, 1)"),
        ("beta=-1", "parameter 'beta': got -1; allowed: a number >= 0"),
        ("spread_lr=-0.01", "parameter 'spread_lr': got -0.01; allowed: a number >= 0"),
        ("kl_target=0", "parameter 'kl_target': got 0; allowed: null (a fixed beta) or a number > 0"),
        ("rollout_state_target=oracle", "parameter 'rollout_state_target': got 'oracle'; allowed: truth"),
        ("hold_spread=sometimes", "parameter 'hold_spread': got 'sometimes'; allowed: true or false"),
        ("policy_reaches=means", "parameter 'policy_reaches': got 'means'; allowed: all (the on-policy terms train every parameter) or spread"),
        ("policy_reaches=spread spread_lr=0", "parameter 'policy_reaches': got 'spread'; allowed: all, or spread with spread_lr > 0"),
        ("learn_frame_spread=maybe", "parameter 'learn_frame_spread': got 'maybe'; allowed: true or false"),
        ("kl_gain=2", "parameter 'kl_gain': got 2; allowed: a number in (0, 1]"),
        ("temperature=0", "parameter 'temperature': got 0; allowed: a number > 0"),
        ("families=[drop,vortex]", "parameter 'families': got ['drop', 'vortex']"),
        ("baseline=dpo", "parameter 'baseline': got 'dpo'; allowed: null"),
        ("queries_per_step=9", "parameter 'queries_per_step': got 9; allowed: at most train_queries=4"),
        ("context=1", "parameter 'context': got 1; allowed: an integer >= the model's tubelet_t=2"),
        ("reward_weights.answer=-2", "parameter 'reward_weights'"),
        ("floor_support=-1", "parameter 'floor_support': got -1; allowed: null (the checkpoint's) or a number >= 0"),
    ],
)
def test_bad_options_are_refused_with_the_allowed_range(workdir, override, message, monkeypatch):
    monkeypatch.chdir(workdir)
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="rlpf", overrides=["checkpoint=start.safetensors", *TINY, *override.split(" ")])
    with pytest.raises(ConfigError) as err:
        check_options(cfg)
    assert message in str(err.value)


def test_benchmark_prints_both_runs_in_one_table(workdir):
    script = Path(__file__).resolve().parents[1] / "benchmarks/rlpf_vs_sft.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--checkpoint", "start.safetensors", "--out-dir", "bench", "--steps", "1", "--long-horizon-s", "0.15",
         "--", *TINY],
        check=False, cwd=workdir, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result["rows"]) == {"start", "sft", "rlpf"}
    assert result["simulator_episodes"] == {"sft": 2, "rlpf": 2}
    assert result["rows"]["rlpf"]["position_error_long"] is not None
    table = "\n".join(lines[:-1])
    assert "rlpf" in table and "sft" in table and "disagreement" in table


def test_temperature_benchmark_evaluates_the_reports_queries_with_and_without_sampling_noise(workdir):
    script = Path(__file__).resolve().parents[1] / "benchmarks/rlpf_temperature.py"
    proc = subprocess.run(
        [sys.executable, str(script), "a=start.safetensors", "b=start.safetensors", "c=start.safetensors,step_spread=-1", "d=start.safetensors,step_spread=-30,frame_spread=-30", "--eval-queries", "2", "--samples", "2", "--horizon", "4", "--long-horizon-s", "0.15", "--split"],
        check=False, cwd=workdir, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    split = ("frames T=1 steps T=0", "frames T=0 steps T=1")
    assert set(rows) == {f"{m} {label}" for m in "abcd" for label in ("T=1", "T=0", *split)}
    assert rows["a T=1"]["rollouts"] == 4 and rows["a T=0"]["rollouts"] == 2
    assert all(rows[f"a {label}"]["rollouts"] == 4 for label in split)
    assert {"step_noise_share", "frame_noise_share"} <= set(result["summary"]["a"])
    assert result["summary"]["a"]["step_spread_factor"] == result["summary"]["a"]["frame_spread_factor"] == 1.0 and "learnt spread factors" in proc.stdout  # pretraining leaves them at 1
    assert rows["a T=1"] == rows["b T=1"] and rows["a T=0"] == rows["b T=0"]  # the same rollout seeds; the mean is deterministic
    assert result["summary"]["b"]["reduction_t1"] in (0.0, None)  # None: nothing disagrees to reduce
    # step_spread=-1: the same weights drawing their steps at e^-1 of the spread, with the same mean
    assert result["summary"]["c"]["step_spread_factor"] == pytest.approx(math.exp(-1))
    assert rows["c T=0"] == rows["a T=0"]  # (what the spread does to sampled steps: test_rlpf's spread tests)
    # both spreads at e^-30: sampling at temperature 1 draws the means, the temperature-0 rollout
    assert result["summary"]["d"]["frame_spread_factor"] == pytest.approx(math.exp(-30))
    for key in ("disagreement_rate", "position_error", "psnr"):
        assert rows["d T=1"][key] == pytest.approx(rows["a T=0"][key], rel=1e-5), key
    bad = subprocess.run([sys.executable, str(script), "a=start.safetensors,step_spread=wide"], check=False, cwd=workdir, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600)
    assert bad.returncode != 0 and "step_spread='wide'" in bad.stderr and "a finite number" in bad.stderr
    bad = subprocess.run([sys.executable, str(script), "a=start.safetensors,frame_spread=inf"], check=False, cwd=workdir, capture_output=True, text=True, env={**os.environ, **ENV}, timeout=600)
    assert bad.returncode != 0 and "frame_spread='inf'" in bad.stderr and "a finite number" in bad.stderr
    # its temperature-0 row is physfusion-rlpf's own report at temperature 0 on the same queries
    report = last_json(run(["checkpoint=start.safetensors", "steps=1", "out_dir=runs/t0", "eval_temperature=0", *TINY], workdir))
    for key in ("disagreement_rate", "position_error", "psnr"):
        assert report["before"][key] == rows["a T=0"][key], key
