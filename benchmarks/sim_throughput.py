"""Throughput of the dataset pipeline against the raw MuJoCo step+render loop, measured in one run.

    python benchmarks/sim_throughput.py                  # ~1 min on 2 cores
    python benchmarks/sim_throughput.py --episodes 32 --repeats 5 --profile

The scene: `drop` with five boxes (num_objects=5, every object a box), 64x64, shadows off, the
simulator timestep of sim.contact.TIMESTEP and 20 frames/s, i.e. 1 / (20 * TIMESTEP) MuJoCo steps per
frame. Each repeat runs the same episodes (the dataset seed 1000 + repeat) through:

  raw        the ceiling: mujoco directly, per frame `update_scene` + `render` on a `mujoco.Renderer`
             and `mj_step` x substeps; only this loop is timed (models and renderers are made off
             the clock). It runs first and last in each repeat, the two counted together.
  simulate   `sim.simulate` of those episodes: realise params, build and compile the scene, render,
             track contacts, extract states, synthesise audio, caption, hash; no writing.
  simulate, Python tracker   the same with contacts tracked in Python (`sim.tracking.PythonTracker`,
             the fallback where no C compiler builds `sim/tracking.c`).
  pipeline   what `physfusion-generate` does per worker (`sim.dataset.generate_shard`): the above plus
             compression and the zarr shard on disk.
  2 workers  two processes each doing the one-worker pipeline job at once; frames/s of both together.

Workers are spawned, warmed up first (imports, OpenGL context and shader compilation are per-process
start-up costs, not throughput) and pinned to one core each (worker k on core k), so "per worker" is
one core. The one-worker rows are timed inside the worker (the raw row: its loop only), the 2-worker
row around both workers. Printed: a table with the ratios (targets: pipeline >= 0.8 x raw per worker;
2 workers >= 1.8 x one) and, last, a JSON line. Ratios are taken within a repeat (same machine load)
and the median over repeats is reported; the raw loop's two runs bracket the others, so a machine
that speeds up or slows down during a repeat does not favour either side. The CPU ratio column compares the same runs by the worker's
CPU seconds (all its threads) instead of wall seconds: on a machine shared with other jobs, wall time
also counts the waits for a core, CPU time does not. `--profile` adds a cProfile of the pipeline
(this process) sorted by own time.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _init_worker(counter=None) -> None:
    if counter is not None and hasattr(os, "sched_setaffinity"):
        with counter.get_lock():  # worker k runs on core k: "per worker" means one core
            core = sorted(os.sched_getaffinity(0))[counter.value % len(os.sched_getaffinity(0))]
            counter.value += 1
        os.sched_setaffinity(0, {core})
    all_boxes()
    # warm up: imports, the OpenGL context and Mesa's shader compilation, zarr's codecs
    with tempfile.TemporaryDirectory() as tmp:
        from sim.dataset import generate_shard

        generate_shard(spec(1, 12345), tmp, 0)
    run_raw(1, 12345)


class Stopwatch:
    """Wall and CPU seconds summed over timed sections; CPU is this process's, all its threads (the
    renderer's and the writer's included), so it is what a worker spends, whatever else the machine runs."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @contextlib.contextmanager
    def timing(self):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


def episode_kwargs(episodes: int, seed: int) -> list[dict]:
    """The sim.simulate arguments of the episodes that `run_pipeline(episodes, seed)` generates."""
    from sim.dataset import DatasetSpec

    dataset = DatasetSpec.from_dict(spec(episodes, seed))
    return [dataset.simulate_kwargs(i) for i in range(episodes)]


def run_raw(episodes: int, seed: int) -> tuple[int, float, float]:
    """The raw loop over the same scenes as the pipeline run with this seed; (frames, wall s, CPU s).

    Per episode: mujoco directly, per frame `update_scene` + `render` on a `mujoco.Renderer` and
    1/(fps*timestep) `mj_step`s. Only that loop is timed: the compiled model and its renderer are made
    (and a first frame rendered) off the clock. The renderers share one OpenGL context, as the
    pipeline's do (`sim.render`'s pooled subclass of mujoco.Renderer: same rendering code); a fresh
    context per episode would cost ~0.2 s and slow every frame after it.
    """
    import mujoco

    import sim
    from sim import contact
    from sim.render import _make_renderer

    substeps = round(1.0 / (FPS * contact.TIMESTEP))
    n = 0
    clock = Stopwatch()
    for kwargs in episode_kwargs(episodes, seed):
        family = sim.get_family(kwargs["scene"])
        scene = family.build(sim.realize_params(kwargs["scene"], kwargs["params"], kwargs["seed"], kwargs["split"]))
        model = mujoco.MjModel.from_xml_string(scene.mjcf)
        model.vis.quality.offsamples = 0
        renderer = _make_renderer(model, HEIGHT, WIDTH)
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        data = mujoco.MjData(model)
        for name, qpos in scene.qpos.items():
            adr = model.joint(name).qposadr[0]
            data.qpos[adr : adr + len(qpos)] = qpos
        mujoco.mj_forward(model, data)
        n_frames = round(family.seconds * FPS)
        frames = []
        with clock.timing():
            for t in range(n_frames):
                renderer.update_scene(data, "main")
                frames.append(renderer.render())
                if t + 1 < n_frames:
                    for _ in range(substeps):
                        mujoco.mj_step(model, data)
        n += len(frames)
        renderer.close()
    return n, clock.wall, clock.cpu


def run_simulate(episodes: int, seed: int) -> tuple[int, float, float]:
    """The pipeline without the dataset writer: sim.simulate of the same episodes; (frames, wall s, CPU s)."""
    import sim

    clock = Stopwatch()
    with clock.timing():
        frames = sum(len(sim.simulate(**kwargs)) for kwargs in episode_kwargs(episodes, seed))
    return frames, clock.wall, clock.cpu


def run_simulate_python(episodes: int, seed: int) -> tuple[int, float, float]:
    """run_simulate with contacts tracked by the Python reference (`sim.tracking.PythonTracker`,
    what runs where no C compiler is found) instead of the C step loop."""
    from sim import engine, tracking

    native, engine.make_tracker = engine.make_tracker, tracking.PythonTracker
    try:
        return run_simulate(episodes, seed)
    finally:
        engine.make_tracker = native


def run_pipeline(episodes: int, seed: int) -> tuple[int, float, float]:
    """One shard of `episodes` episodes through sim.dataset.generate_shard; (frames, wall s, CPU s)."""
    from sim.dataset import generate_shard

    clock = Stopwatch()
    with tempfile.TemporaryDirectory(prefix="physfusion-bench-") as tmp:
        with clock.timing():
            info = generate_shard(spec(episodes, seed), tmp, 0)
    return info["frames"], clock.wall, clock.cpu


def _timed(pool, fn, args_list) -> tuple[int, float]:
    """Run fn over args_list on the pool at once; (total frames, wall seconds of the whole)."""
    start = time.perf_counter()
    results = pool.starmap(fn, args_list)
    return sum(r[0] for r in results), time.perf_counter() - start


def _one_worker(pool, fn, episodes: int, seed: int) -> tuple[float, float]:
    """fn on the one-worker pool; (frames per wall second, frames per CPU second), as fn timed them."""
    frames, wall, cpu = pool.apply(fn, (episodes, seed))
    return frames / wall, frames / cpu


# --------------------------------------------------------------------------------------------------


def measure(episodes: int, repeats: int) -> dict:
    import sim

    frames_per_episode = round(sim.get_family("drop").seconds * FPS)
    context = multiprocessing.get_context("spawn")
    rows = {"raw": [], "simulate": [], "simulate_python": [], "pipeline": [], "pipeline_2w": []}  # frames per wall second
    cpu_rows = {"raw": [], "simulate": [], "simulate_python": [], "pipeline": []}  # frames per CPU second of the worker
    one_core, two_cores = context.Value("i", 0), context.Value("i", 0)
    with context.Pool(1, _init_worker, (one_core,)) as one, context.Pool(2, _init_worker, (two_cores,)) as two:
        two.starmap(time.sleep, [(0.5,), (0.5,)])  # both processes up and warm before timing
        for r in range(repeats):
            # the same episodes (seed 1000 + r) through the raw loop, sim.simulate and the pipeline;
            # the raw loop runs first and last and counts the two together (time-weighted), so that a
            # drift in the machine's speed during the repeat weighs on both sides of the ratios alike
            raw_before = _one_worker(one, run_raw, episodes, 1000 + r)
            for name, fn in (("simulate", run_simulate), ("simulate_python", run_simulate_python), ("pipeline", run_pipeline)):
                wall_fps, cpu_fps = _one_worker(one, fn, episodes, 1000 + r)
                rows[name].append(wall_fps)
                cpu_rows[name].append(cpu_fps)
            raw_after = _one_worker(one, run_raw, episodes, 1000 + r)
            rows["raw"].append(statistics.harmonic_mean([raw_before[0], raw_after[0]]))
            cpu_rows["raw"].append(statistics.harmonic_mean([raw_before[1], raw_after[1]]))
            # two workers, each doing the one worker's job (into its own directory)
            frames, seconds = _timed(two, run_pipeline, [(episodes, 1000 + r), (episodes, 1000 + r)])
            rows["pipeline_2w"].append(frames / seconds)
            print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rows.items()) + " frames/s", file=sys.stderr)
    ratio = lambda a, b, t=rows: statistics.median(x / y for x, y in zip(t[a], t[b]))  # noqa: E731  same-repeat ratios
    out = {f"{k}_fps": statistics.median(v) for k, v in rows.items()}
    out.update({f"{k}_cpu_fps": statistics.median(v) for k, v in cpu_rows.items()})
    out.update(
        simulate_vs_raw=ratio("simulate", "raw"),
        python_tracker_vs_raw=ratio("simulate_python", "raw"),
        pipeline_vs_raw=ratio("pipeline", "raw"),
        scaling_2w=ratio("pipeline_2w", "pipeline"),
        simulate_vs_raw_cpu=ratio("simulate", "raw", cpu_rows),
        python_tracker_vs_raw_cpu=ratio("simulate_python", "raw", cpu_rows),
        pipeline_vs_raw_cpu=ratio("pipeline", "raw", cpu_rows),
        repeats={k: [round(v, 1) for v in vs] for k, vs in rows.items()},
        repeats_cpu={k: [round(v, 1) for v in vs] for k, vs in cpu_rows.items()},
        frames_per_episode=frames_per_episode,
        episodes_per_run=episodes,
    )
    return out


def profile(episodes: int) -> None:
    import cProfile
    import pstats

    _init_worker(None)
    profiler = cProfile.Profile()
    profiler.enable()
    run_pipeline(episodes, 4000)
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--episodes", type=int, default=16, help="episodes per measurement (per worker); 16 is physfusion-generate's default shard_size"
    )
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each kind; medians are reported")
    parser.add_argument("--profile", action="store_true", help="also cProfile the pipeline (to stderr)")
    args = parser.parse_args()

    import mujoco

    r = measure(args.episodes, args.repeats)
    if args.profile:
        profile(args.episodes)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"
    print(f"sim throughput: drop, {NUM_OBJECTS} boxes, {WIDTH}x{HEIGHT}, {FPS} fps, shadows off, MuJoCo {mujoco.__version__}, {machine}")
    print(f"{'':40s} {'frames/s':>9s} {'ratio':>6s} {'target':>7s} {'CPU ratio':>21s}")
    print(f"{'raw step+render (1 core)':40s} {r['raw_fps']:9.0f} {1:6.2f}")
    print(f"{'sim.simulate only (1 core)':40s} {r['simulate_fps']:9.0f} {r['simulate_vs_raw']:6.2f} {'':7s}  vs raw  {r['simulate_vs_raw_cpu']:6.2f}")
    print(f"{'  the same, Python tracker (fallback)':40s} {r['simulate_python_fps']:9.0f} {r['python_tracker_vs_raw']:6.2f} {'':7s}  vs raw  {r['python_tracker_vs_raw_cpu']:6.2f}")
    print(f"{'pipeline incl. zarr write, 1 worker':40s} {r['pipeline_fps']:9.0f} {r['pipeline_vs_raw']:6.2f} {'>= 0.80':7s}  vs raw  {r['pipeline_vs_raw_cpu']:6.2f}")
    print(f"{'pipeline incl. zarr write, 2 workers':40s} {r['pipeline_2w_fps']:9.0f} {r['scaling_2w']:6.2f} {'>= 1.80':7s}  vs 1 worker")
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
