"""`physfusion-generate` run for real, as a subprocess, with tiny settings (drop, 32x32, 0.5 s)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.dataset import CRASH_ENV

BIN = Path(sys.executable).with_name("physfusion-generate")
COMMAND = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "sim.generate"]
TINY = ["scene=drop", "num_episodes=5", "shard_size=2", "seconds=0.5", "width=32", "height=32", "preview_episodes=2"]
SUMMARY_KEYS = {"episodes", "frames", "frames_per_s", "rejected", "bytes_on_disk", "out_dir", "preview"}


def generate(cwd: Path, *overrides: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != CRASH_ENV} | (env or {})
    proc = subprocess.run([*COMMAND, *overrides], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dataset_files(out: Path) -> dict[str, bytes]:
    """Every file of the dataset but the (lossy, encoder-dependent) preview, by relative path."""
    files = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and not rel.startswith(".") and not rel.startswith("preview"):
            files[rel] = path.read_bytes()
    return files


def assert_same_dataset(a: Path, b: Path) -> None:
    fa, fb = dataset_files(a), dataset_files(b)
    assert sorted(fa) == sorted(fb)
    different = [name for name in fa if fa[name] != fb[name]]
    assert not different, f"files differ: {different[:5]}"
    assert not (b / ".tmp").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted single-process run; also checks the summary and that nothing litters cwd."""
    cwd = tmp_path_factory.mktemp("ref")
    proc = generate(cwd, *TINY, "out_dir=data/ref", "workers=1")
    assert sorted(p.name for p in cwd.iterdir()) == ["data"]  # no outputs/, .hydra/ or logs in cwd
    out = cwd / "data" / "ref"
    s = summary(proc)
    assert SUMMARY_KEYS <= set(s)
    assert (s["episodes"], s["frames"], s["rejected"], s["out_dir"]) == (5, 50, 0, str(out))
    assert s["bytes_on_disk"] > 0 and Path(s["preview"]).exists()
    assert "5/5" in proc.stderr  # the progress bar
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["index"] for m in manifest["episodes"]] == [0, 1, 2, 3, 4]
    assert manifest["shards"] == ["shard-00000", "shard-00001", "shard-00002"]
    return out


def test_two_workers_give_identical_bytes(reference, tmp_path):
    generate(tmp_path, *TINY, f"out_dir={tmp_path / 'w2'}", "workers=2", "progress=false")
    assert_same_dataset(reference, tmp_path / "w2")


def test_shard_tasks_compose_the_same_dataset(reference, tmp_path):
    """The Slurm-array mechanism without Slurm: task k of n generates shards s = k mod n."""
    out = f"out_dir={tmp_path / 'tasks'}"
    first = summary(generate(tmp_path, *TINY, out, "num_tasks=2", "task=0", "workers=1", "progress=false"))
    assert not first["complete"] and first["shards_done"] == 2 and first["preview"] is None
    assert not (tmp_path / "tasks" / "manifest.json").exists()
    second = summary(generate(tmp_path, *TINY, out, "num_tasks=2", "task=1", "workers=2", "progress=false"))
    assert second["complete"] and second["episodes"] == 5
    assert_same_dataset(reference, tmp_path / "tasks")


def test_resume_after_crash_mid_shard(reference, tmp_path):
    out = tmp_path / "crash"
    args = [*TINY, f"out_dir={out}", "workers=1", "progress=false"]
    crashed = generate(tmp_path, *args, env={CRASH_ENV: "3"}, check=False)  # dies inside shard 1
    assert crashed.returncode != 0
    assert not (out / "manifest.json").exists()
    assert sorted(p.name for p in (out / "data.zarr").glob("shard-*")) == ["shard-00000"]
    assert list((out / ".tmp").iterdir())  # the half-written shard was never renamed into place
    resumed = summary(generate(tmp_path, *args))
    assert resumed["generated_episodes"] == 3  # shard 0 was kept, not redone
    assert_same_dataset(reference, out)


def test_resume_after_sigkill(reference, tmp_path):
    out = tmp_path / "killed"
    args = [*TINY, f"out_dir={out}", "workers=1", "progress=false"]
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    proc = subprocess.Popen([*COMMAND, *args], cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not list((out / "data.zarr").glob("shard-*")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (out / "manifest.json").exists():
        pytest.skip("the run finished before it could be killed")
    generate(tmp_path, *args)
    assert_same_dataset(reference, out)


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    """A parent killed outright (SIGKILL to it alone, so its pool is never shut down) takes its
    workers with it: no orphan goes on writing shards."""
    out = tmp_path / "orphans"
    args = ["scene=drop", "num_episodes=40", "shard_size=2", "seconds=0.5", "width=32", "height=32", f"out_dir={out}", "workers=2", "progress=false"]
    proc = subprocess.Popen([*COMMAND, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        if len(workers) == 2 and list((out / "data.zarr").glob("shard-*")):
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2] for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z"]
    assert not alive, f"orphaned workers still running: {alive}"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("scene=dorp", ["'scene'", "'dorp'", "drop", "all"]),
        ("params.mass=-1", ["'mass'", "-1", "(0, 1000]"]),
        ("params.colour=red", ["'colour'", "allowed", "restitution"]),
    ],
)
def test_bad_input_fails_before_writing(tmp_path, override, expected):
    proc = generate(tmp_path, *TINY, "out_dir=out", override, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_different_config_is_refused(reference, tmp_path):
    before = dataset_files(reference)
    proc = generate(tmp_path, *TINY, f"out_dir={reference}", "num_episodes=6", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "num_episodes: 5 on disk, 6 requested" in proc.stderr
    assert dataset_files(reference) == before


def test_rerun_of_a_finished_dataset_does_nothing(reference, tmp_path):
    before = dataset_files(reference)
    s = summary(generate(tmp_path, *TINY, f"out_dir={reference}", "workers=2"))
    assert s["generated_episodes"] == 0 and s["episodes"] == 5 and s["complete"]
    assert dataset_files(reference) == before


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'physfusion[ray]')")
def test_ray_launcher_gives_identical_bytes(reference, tmp_path):
    """Shards as tasks of a local Ray instance started with ray.init(num_cpus=2)."""
    proc = generate(tmp_path, *TINY, f"out_dir={tmp_path / 'ray'}", "launcher=ray", "workers=2", "progress=false")
    assert summary(proc)["episodes"] == 5
    assert_same_dataset(reference, tmp_path / "ray")


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None, reason="hydra-submitit-launcher not installed")
def test_slurm_config_as_local_submitit_array(reference, tmp_path):
    """configs/launcher/slurm.yaml, with submitit's local executor standing in for Slurm."""
    generate(tmp_path, "-m", "launcher=slurm", "hydra/launcher=submitit_local", "num_tasks=2", *TINY,
             f"out_dir={tmp_path / 'slurm'}", "workers=1", "progress=false")
    assert_same_dataset(reference, tmp_path / "slurm")


def test_configs_compose_from_the_installed_package():
    """The Hydra configs through the compose API: defaults, the launcher group, `params` overrides."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose("generate", overrides=["scene=all", "+params.mass=2.0", "launcher=ray"])
        assert (cfg.scene, cfg.params.mass, cfg.launcher.name, cfg.launcher.address) == ("all", 2.0, "ray", None)
        assert cfg.out_dir == "data/all" and cfg.workers >= 1 and cfg.task is None
        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
            slurm = compose("generate", overrides=["launcher=slurm", "num_tasks=4"], return_hydra_config=True)
            assert slurm.hydra.mode.name == "MULTIRUN" and slurm.launcher.name == "local"
            assert slurm.hydra.sweeper.params.task == "range(0,4)"
            assert "SlurmLauncher" in slurm.hydra.launcher._target_
