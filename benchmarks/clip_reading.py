"""Reading training clips: from the zarr store every time against from the in-memory episode cache.

    python benchmarks/clip_reading.py --data runs/quality/mix                  # reads only (~1 min)
    physfusion-generate scene=all num_episodes=100 seconds=2.0 out_dir=runs/mix100
    python benchmarks/clip_reading.py --data runs/mix100 --train-steps 100     # + physfusion-train both ways

Reads: the same random (episode, start) draws as training makes, through `worldmodel.data.ClipDataset`
with `cache_mb=0` (each clip read from the store: its chunks of every array) and with the cache
(whole episodes kept once read; warmed over the dataset first, as a training run's first pass does),
alternating in blocks so that machine load affects both alike; the ratio is the median of
within-repeat ratios. With --train-steps, `physfusion-train` (nano, the benchmark's clip length and
batch) runs that many steps with `cache_mb=0` and with the cache, one after the other, and the
training loop's clips/s of the two are compared: what the reading costs the step on the same cores.
The cache only pays once episodes are drawn again, so time training on a dataset small enough for
the steps to draw each episode several times (100 episodes, 100 steps of 8 clips: 8 draws each;
the benchmark's 1500 episodes over 1500 steps are drawn 8 times each too).

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from worldmodel.data import ClipDataset  # noqa: E402


def read_rate(ds: ClipDataset, draws: np.ndarray) -> float:
    """clips/s reading the clips at dataset positions `draws`"""
    t = time.perf_counter()
    for k in draws:
        ds[int(k)]
    return len(draws) / (time.perf_counter() - t)


def train_rate(data: str, steps: int, cache_mb: float) -> float:
    """the training loop's clips/s over `steps` steps of physfusion-train with cache_mb"""
    out = tempfile.mkdtemp(prefix="clip_reading_")
    try:
        proc = subprocess.run(
            [shutil.which("physfusion-train"), f"data={data}", "model=nano", f"steps={steps}", f"out_dir={out}", "progress=false", "video_every=0", f"cache_mb={cache_mb}"],
            capture_output=True, text=True, check=True,
        )
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["clips_per_s"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a dataset written by physfusion-generate")
    ap.add_argument("--clip-len", type=int, default=34)
    ap.add_argument("--clips", type=int, default=200, help="clips read per repeat and way")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache-mb", type=float, default=2048)
    ap.add_argument("--train-steps", type=int, default=0, help="also time physfusion-train this many steps each way (0: reads only)")
    args = ap.parse_args()

    store = ClipDataset(args.data, args.clip_len, as_episode=True)
    cached = ClipDataset(args.data, args.clip_len, as_episode=True, cache_mb=args.cache_mb)
    rng = np.random.default_rng(0)
    for e in range(len(cached.data.episodes)):  # the first pass over the data, off the clock
        cached.whole(e)
    rates = {"store": [], "cache": []}
    for r in range(args.repeats):
        draws = rng.integers(0, len(store), args.clips)
        for name in (("store", "cache") if r % 2 == 0 else ("cache", "store")):
            rates[name].append(read_rate(store if name == "store" else cached, draws))
    ratio = statistics.median(c / s for c, s in zip(rates["cache"], rates["store"]))
    result = {
        "clips_per_s_store": statistics.median(rates["store"]),
        "clips_per_s_cache": statistics.median(rates["cache"]),
        "read_speedup": ratio,
        "cached_mb": cached._cached_bytes / 2**20,
    }
    print(f"{'reading clips':28s} {'clips/s':>10s} {'ratio':>7s}")
    print(f"{'from the store (cache_mb=0)':28s} {result['clips_per_s_store']:10.1f} {1.0:7.2f}")
    print(f"{'from memory':28s} {result['clips_per_s_cache']:10.1f} {ratio:7.1f}   ({result['cached_mb']:.0f} MB cached)")
    if args.train_steps:
        plain = train_rate(args.data, args.train_steps, 0)
        fast = train_rate(args.data, args.train_steps, args.cache_mb)
        result |= {"train_clips_per_s_store": plain, "train_clips_per_s_cache": fast, "train_speedup": fast / plain}
        print(f"physfusion-train, {args.train_steps} steps: {plain:.2f} clips/s reading from the store, {fast:.2f} from memory: {fast / plain:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
