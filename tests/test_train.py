"""physfusion-train: real subprocess runs on a tiny generated dataset (tiny model, short clips).

Checks the schedule, exact resume after an abrupt exit, refusal of bad input, the on-the-fly
simulation mode, DDP with two gloo processes and the checkpoint contract (`worldmodel.load`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import worldmodel as wm
from conftest import last_json, run_command
from worldmodel.train import CRASH_ENV, MAX_NONFINITE_STEPS, batch_indices, learning_rate

TINY = ["model.d_model=32", "model.n_layer=1", "model.n_head=2", "clip_len=6", "batch_size=2", "video_every=0", "progress=false", "num_workers=0"]


def run(args, cwd, env=None, check=True, launcher=None):
    return run_command("physfusion-train", args, cwd, env=env, check=check, launcher=launcher)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    subprocess.run(
        [shutil.which("physfusion-generate"), "scene=all", "num_episodes=10", "seconds=0.5", "out_dir=data", "progress=false", "preview_episodes=0", "workers=1"],
        cwd=root, check=True, capture_output=True, env={**os.environ, "MUJOCO_GL": "egl"}, timeout=600,
    )
    return root


def test_learning_rate_warms_up_then_decays_to_min():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_steps=10, steps=110)
    lrs = [learning_rate(s, **kw) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine falls
    assert lrs[60] == pytest.approx(0.5 * (1e-3 + 1e-4))  # half way down the cosine
    assert learning_rate(110, **kw) == pytest.approx(1e-4)


def test_batches_are_a_function_of_seed_and_step():
    a = batch_indices(0, 5, 100, 8)
    assert np.array_equal(a, batch_indices(0, 5, 100, 8))
    assert not np.array_equal(a, batch_indices(0, 6, 100, 8)) and not np.array_equal(a, batch_indices(1, 5, 100, 8))
    assert a.min() >= 0 and a.max() < 100


def test_train_writes_a_loadable_checkpoint_and_logs(dataset):
    proc = run(["data=data", "steps=4", "ckpt_every=2", "video_every=4", "out_dir=runs/a", *TINY], dataset)
    s = last_json(proc)
    assert s["steps"] == 4 and s["resumed_from"] == 0 and s["processes"] == 1
    assert "parameters" in proc.stdout.splitlines()[0]  # the true parameter count, printed at start
    assert np.isfinite(s["loss"]) and s["clips_per_s"] > 0
    model = wm.load(s["checkpoint"])
    assert model.cfg.d_model == 32 and model.num_parameters() == s["parameters"]
    out = dataset / "runs/a"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert (out / "videos/step-000004.mp4").stat().st_size > 0
    assert any((out / "tb").iterdir())
    state = json.loads((out / "checkpoints/step-000004/state.json").read_text())
    assert state["step"] == 4 and state["run"]["data_hash"] == json.loads((dataset / "data/manifest.json").read_text())["hash"]
    # the final weights moved away from initialisation and equal the last checkpoint's
    last = load_file(str(out / "checkpoints/step-000004/model.safetensors"))
    final = load_file(s["checkpoint"])
    assert all(torch.equal(last[k], final[k]) for k in final)


def test_interrupted_run_resumes_exactly(dataset):
    args = ["data=data", "steps=6", "ckpt_every=3", *TINY]
    whole = last_json(run([*args, "out_dir=runs/whole"], dataset))
    crashed = run([*args, "out_dir=runs/crash"], dataset, env={CRASH_ENV: "4"}, check=False)
    assert crashed.returncode == 3 and not (dataset / "runs/crash/checkpoints/step-000006").exists()
    resumed = last_json(run([*args, "out_dir=runs/crash"], dataset))
    assert resumed["resumed_from"] == 3
    a, b = load_file(whole["checkpoint"]), load_file(resumed["checkpoint"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["loss"] == whole["loss"]
    # a finished run rerun does nothing; more steps continue it
    again = last_json(run([*args, "out_dir=runs/crash"], dataset))
    assert again["resumed_from"] == 6 and again["clips_per_s"] is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("data=missing", "data: '"),
        ("lr=-1", "lr: got -1"),
        ("clip_len=500", "clip_len"),
        ("state_dropout=2", "state_dropout: got 2"),
        ("data=sim:vortex", "data: got 'sim:vortex'"),
        ("model.n_head=3", "n_head"),
        ("device=tpu", "device: got 'tpu'"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_writes_nothing(dataset, override, message):
    proc = run(["data=data", "steps=1", "out_dir=runs/bad", *TINY, override], dataset, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (dataset / "runs/bad").exists()


def test_a_diverging_run_skips_non_finite_steps_then_stops_with_finite_weights(dataset):
    proc = run(["data=data", "steps=40", "ckpt_every=1", "out_dir=runs/diverge", *TINY, "lr=1e30", "min_lr=1e30", "warmup_steps=0"], dataset, check=False)
    assert proc.returncode == 2 and "lr: training diverged at lr 1e+30" in proc.stderr and "Traceback" not in proc.stderr
    first, last = map(int, re.search(r"steps (\d+)\.\.(\d+) all had a non-finite loss", proc.stderr).groups())
    assert last - first + 1 == MAX_NONFINITE_STEPS and last < 40
    ckpts = sorted((dataset / "runs/diverge/checkpoints").iterdir())
    assert ckpts and int(ckpts[-1].name.split("-")[1]) < last  # it stopped at the divergence
    for ckpt in ckpts:  # the skipped updates wrote nothing: every checkpoint's weights are finite
        assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "model.safetensors")).values())
    assert json.loads((ckpts[-1] / "state.json").read_text())["skipped_steps"] >= 1


def test_rerun_with_another_definition_is_refused(dataset):
    run(["data=data", "steps=1", "out_dir=runs/def", *TINY], dataset)
    proc = run(["data=data", "steps=2", "out_dir=runs/def", *TINY, "lr=0.01"], dataset, check=False)
    assert proc.returncode == 2 and "different lr" in proc.stderr


def test_on_the_fly_simulation(dataset):
    s = last_json(run(["data=sim:drop", "steps=2", "out_dir=runs/fly", *TINY], dataset))
    assert s["steps"] == 2 and np.isfinite(s["loss"])
    assert json.loads((dataset / "runs/fly/run.json").read_text())["data_hash"].startswith("sim:drop:train")


def test_ddp_two_gloo_processes(dataset):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    proc = run(["data=data", "steps=3", "batch_size=4", "out_dir=runs/ddp", *[a for a in TINY if not a.startswith("batch_size")]], dataset, launcher=launcher)
    s = last_json(proc)
    assert s["processes"] == 2 and s["steps"] == 3 and np.isfinite(s["loss"])
    assert proc.stdout.count('"checkpoint"') == 1  # rank 0 alone reports and writes
    model = wm.load(s["checkpoint"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    odd = run(["data=data", "steps=1", "batch_size=3", "out_dir=runs/ddp3", *[a for a in TINY if not a.startswith("batch_size")]], dataset, launcher=launcher, check=False)
    assert odd.returncode != 0 and "batch_size: got 3" in odd.stderr
