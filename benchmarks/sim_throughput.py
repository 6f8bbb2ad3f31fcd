"""Throughput of the dataset pipeline against the raw MuJoCo step+render loop, measured in one run.

    python benchmarks/sim_throughput.py                 # ~1-2 min on 2 cores
    python benchmarks/sim_throughput.py --episodes 24 --repeats 3 --profile

The scene: `drop` with five boxes (num_objects=5, every object a box), 64x64, shadows off, the
simulator timestep of sim.contact.TIMESTEP and 20 frames/s, i.e. 1 / (20 * TIMESTEP) MuJoCo steps per
frame. Three measurements, each in fresh worker processes that are warmed up first (imports, the
OpenGL context and its shaders are per-process start-up costs, not throughput):

  raw       the ceiling: mujoco directly on the same compiled scene, one `mujoco.Renderer`, per frame
            `mj_step` x substeps + `update_scene` + `render`; one core.
  pipeline  what `physfusion-generate` does per worker (`sim.dataset.generate_shard`): realise params,
            build and compile the scene, simulate, render, track contacts, extract states, synthesise
            audio, caption, hash, compress (Blosc-zstd) and write a zarr shard; one worker.
  2 workers the same pipeline on two processes at once (disjoint shards); frames/s of both together.

Printed: a table, then the ratios (targets: pipeline >= 0.8 x raw per worker; 2 workers >= 1.8 x one)
and, last, a JSON line. Each repeat measures all three back to back, so the ratios compare runs under
the same machine load; the reported figure of each is the median over repeats. `--profile` adds a
cProfile of the pipeline (in this process) sorted by own time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

WIDTH = HEIGHT = 64
FPS = 20
NUM_OBJECTS = 5
PARAMS = {"num_objects": NUM_OBJECTS, "shape": "box"}


def all_boxes() -> None:
    """Make every drop object a box (the family draws the shapes of objects 2..n at random)."""
    from sim.scenes import drop

    family = drop.FAMILY
    if getattr(family, "_benchmark_boxes", False):
        return
    extras = family.extras

    def boxes(p, rng):
        values = extras(p, rng)
        for other in values["others"]:
            other["shape"] = "box"
        return values

    family.extras = boxes
    family._benchmark_boxes = True


def spec(episodes: int, seed: int) -> dict:
    from sim.dataset import DatasetSpec

    return DatasetSpec(
        scene="drop", num_episodes=episodes, seed=seed, width=WIDTH, height=HEIGHT, fps=FPS,
        params=dict(PARAMS), shard_size=episodes,
    ).to_dict()


# --------------------------------------------------------------------------------------------------
# Worker-side measurements (run in pool processes)


def _init_worker() -> None:
    all_boxes()
    # warm up: imports, the OpenGL context and Mesa's shader compilation, zarr's codecs
    with tempfile.TemporaryDirectory() as tmp:
        from sim.dataset import generate_shard

        generate_shard(spec(1, 12345), tmp, 0)
    _raw_scene()


_SCENE = None


def _raw_scene():
    """The compiled drop scene with five boxes (seed 0), as the pipeline builds it."""
    global _SCENE
    if _SCENE is None:
        import mujoco

        import sim
        from sim.scenes import drop

        all_boxes()
        scene = drop.FAMILY.build(sim.realize_params("drop", PARAMS, 0))
        _SCENE = scene, mujoco.MjModel.from_xml_string(scene.mjcf)
    return _SCENE


def run_raw(episodes: int, frames_per_episode: int) -> tuple[int, float]:
    """Raw loop: `episodes` x `frames_per_episode` frames; returns (frames, seconds)."""
    import mujoco

    from sim import contact

    scene, model = _raw_scene()
    model.vis.quality.offsamples = 0
    data = mujoco.MjData(model)
    substeps = round(1.0 / (FPS * contact.TIMESTEP))
    renderer = mujoco.Renderer(model, height=HEIGHT, width=WIDTH)
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
    renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
    frames = []
    start = time.perf_counter()
    for _ in range(episodes):
        mujoco.mj_resetData(model, data)
        for name, qpos in scene.qpos.items():
            adr = model.joint(name).qposadr[0]
            data.qpos[adr : adr + len(qpos)] = qpos
        mujoco.mj_forward(model, data)
        for t in range(frames_per_episode):
            renderer.update_scene(data, "main")
            frames.append(renderer.render())
            if t + 1 < frames_per_episode:
                for _ in range(substeps):
                    mujoco.mj_step(model, data)
    seconds = time.perf_counter() - start
    renderer.close()
    return len(frames), seconds


def run_pipeline(episodes: int, seed: int) -> tuple[int, float]:
    """One shard of `episodes` episodes through sim.dataset.generate_shard; returns (frames, seconds)."""
    from sim.dataset import generate_shard

    with tempfile.TemporaryDirectory(prefix="physfusion-bench-") as tmp:
        start = time.perf_counter()
        info = generate_shard(spec(episodes, seed), tmp, 0)
        seconds = time.perf_counter() - start
    return info["frames"], seconds


def _timed(pool, fn, args_list) -> tuple[int, float]:
    """Run fn over args_list on the pool at once; (total frames, wall seconds)."""
    start = time.perf_counter()
    results = pool.starmap(fn, args_list)
    return sum(r[0] for r in results), time.perf_counter() - start


# --------------------------------------------------------------------------------------------------


def measure(episodes: int, repeats: int) -> dict:
    import sim

    frames_per_episode = round(sim.get_family("drop").seconds * FPS)
    context = multiprocessing.get_context("spawn")
    rows = {"raw": [], "pipeline": [], "pipeline_2w": []}
    with context.Pool(1, initializer=_init_worker) as one, context.Pool(2, initializer=_init_worker) as two:
        # make sure both of the 2-worker pool's processes are up and warm before timing
        two.starmap(time.sleep, [(0.5,), (0.5,)])
        for r in range(repeats):
            frames, seconds = _timed(one, run_raw, [(episodes, frames_per_episode)])
            rows["raw"].append(frames / seconds)
            frames, seconds = _timed(one, run_pipeline, [(episodes, 1000 + r)])
            rows["pipeline"].append(frames / seconds)
            frames, seconds = _timed(two, run_pipeline, [(episodes, 2000 + r), (episodes, 3000 + r)])
            rows["pipeline_2w"].append(frames / seconds)
            print(
                f"  repeat {r + 1}/{repeats}: raw {rows['raw'][-1]:.0f}, pipeline {rows['pipeline'][-1]:.0f}, "
                f"2 workers {rows['pipeline_2w'][-1]:.0f} frames/s",
                file=sys.stderr,
            )
    per_worker = [p / r for p, r in zip(rows["pipeline"], rows["raw"])]
    scaling = [p2 / p for p2, p in zip(rows["pipeline_2w"], rows["pipeline"])]
    return {
        "raw_fps": statistics.median(rows["raw"]),
        "pipeline_fps": statistics.median(rows["pipeline"]),
        "pipeline_2w_fps": statistics.median(rows["pipeline_2w"]),
        "pipeline_vs_raw": statistics.median(per_worker),
        "scaling_2w": statistics.median(scaling),
        "repeats": {k: [round(v, 1) for v in vs] for k, vs in rows.items()},
        "frames_per_episode": frames_per_episode,
        "episodes_per_run": episodes,
    }


def profile(episodes: int) -> None:
    import cProfile
    import pstats

    _init_worker()
    profiler = cProfile.Profile()
    profiler.enable()
    run_pipeline(episodes, 4000)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=16, help="episodes per measurement (per worker)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each kind; medians are reported")
    parser.add_argument("--profile", action="store_true", help="also cProfile the pipeline (to stderr)")
    args = parser.parse_args()

    import mujoco

    r = measure(args.episodes, args.repeats)
    if args.profile:
        profile(args.episodes)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"
    print(f"sim throughput: drop, {NUM_OBJECTS} boxes, {WIDTH}x{HEIGHT}, {FPS} fps, shadows off, MuJoCo {mujoco.__version__}, {machine}")
    print(f"{'':28s} {'frames/s':>10s} {'ratio':>8s} {'target':>8s}")
    print(f"{'raw step+render (1 core)':28s} {r['raw_fps']:10.0f} {'1.00':>8s} {'':>8s}")
    print(f"{'pipeline, 1 worker':28s} {r['pipeline_fps']:10.0f} {r['pipeline_vs_raw']:8.2f} {'>= 0.80':>8s}  (vs raw)")
    print(f"{'pipeline, 2 workers':28s} {r['pipeline_2w_fps']:10.0f} {r['scaling_2w']:8.2f} {'>= 1.80':>8s}  (vs 1 worker)")
    summary = {
        "benchmark": "sim_throughput",
        "scene": "drop",
        "num_objects": NUM_OBJECTS,
        "resolution": [WIDTH, HEIGHT],
        "fps": FPS,
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()},
        "targets_met": {"pipeline_vs_raw": r["pipeline_vs_raw"] >= 0.8, "scaling_2w": r["scaling_2w"] >= 1.8},
        "machine": machine,
        "mujoco": mujoco.__version__,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
