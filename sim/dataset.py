"""Datasets of episodes on disk: the sharded zarr v3 format, its writer, and `load_dataset`.

On-disk schema (version 2). Everything can be read with `zarr` (v3) and `json` alone:

    out_dir/
      config.json              the generation config (`DatasetSpec` as JSON), written before any shard;
                               a rerun with a different config is refused instead of mixing datasets
      data.zarr/               zarr v3 group; attributes: schema, schema_version, config
        shard-00003/           zarr group: one shard = `shard_size` consecutive episode indices
                               [3*shard_size, 4*shard_size), the unit of work. It appears atomically
                               (written under out_dir/.tmp/, then renamed): present means complete.
                               attributes: shard, start, stop, episodes (list of episode metadata, the
                               only copy in the shard), rejected (unstable simulations), skipped
                               (indices with no episode), frames (F, the shard's total)
                               Arrays: the shard's episodes concatenated along axis 0, in offset order;
                               episode e holds rows [frame_start, frame_stop) (audio: [audio_start,
                               audio_stop)) of its metadata. No per-episode groups.
          frames               (F, H, W, 3) uint8 RGB
          depth                (F, H, W) float32, metres along the optical axis   [depth=true]
          segmentation         (F, H, W) int32, 0 = background, i+1 = body_names[i] [segmentation=true]
          times                (F,) float64 s, per episode times[t] = t / fps
          states               (F, N, 13) float64, N = the most bodies of any episode in the shard; an
                               episode's rows hold its n = len(body_names) bodies in [:, :n], zeros
                               after. World frame: centre-of-mass position xyz (m), quaternion wxyz,
                               linear velocity xyz (m/s), angular velocity xyz (rad/s)
          actions              (F, A) float32, force xyz (N) on body 0 + actuator controls, A = the
                               largest action size; zero-padded (and zero rows for passive episodes)
                               [some episode actuated]
          audio                (sum S,) float32 mono in [-1, 1] at audio_rate Hz, per episode
                               S = round(T / fps * audio_rate)
      manifest.json            written last, atomically: the dataset is complete iff it exists
      preview.mp4              the first `preview_episodes` episodes tiled in a grid (preview.gif without ffmpeg)

Each array is stored with zarr's sharding codec (one file per array per shard) in inner chunks,
each compressed losslessly on its own, so a clip reads only the chunks its rows overlap: Zstd
(level 3), except audio, byte-shuffled LZ4 (Blosc, clevel 5). Image arrays (frames, depth,
segmentation) have chunks of `chunk_frames` frames; the others (times, states, actions, audio) have
chunks of at least `SMALL_CHUNK_BYTES` (256 KiB) of raw data (a whole shard's states in one chunk): a
chunk's cost in the writer is mostly fixed, and reading a few hundred KiB more per clip costs less
than a file seek. A shard's episodes are buffered in memory and each array is written with one call;
the shard group's zarr.json (its attributes) is compact JSON, written last. Older shards (Blosc-zstd
for every array, an indented zarr.json) read the same way: each array's codecs are in its metadata.
An episode's own arrays: `arr[frame_start + a : frame_start + b]` cut to `arrays[name]["shape"]`
(`sim.dataset.read_array` does this).

Episode metadata (manifest["episodes"][i] and shard attributes["episodes"][offset]):
    index (episode index in [0, num_episodes)), key ("shard-00003", the shard group's path in
    data.zarr), shard, offset (position within the shard), attempt (0, or k for the k-th retry after an
    unstable simulation), frame_start, frame_stop, audio_start, audio_stop (its rows in the shard's
    arrays), scene, seed (the `sim.simulate` seed), split, fps, n_frames, audio_rate, body_names,
    params (every realised parameter), caption, events ([{time, body_a, body_b, impulse, position}]),
    camera ({name, fovy_deg, width, height, position, rotation, intrinsics, extrinsics}), provenance
    ({mujoco, scene_hash, physfusion, timestep, split}), arrays ({name: {shape, dtype}}: the
    episode's own, unpadded shapes), hash (sha256 of those arrays and this metadata).

manifest.json: schema, schema_version, config, config_hash, num_requested, num_episodes, num_frames,
rejected, skipped, shards (group names), hash (sha256 over the episode hashes in index order),
provenance (library versions), preview, episodes.

Determinism: episode i's scene and seed are functions of (seed, split, i) alone
(`DatasetSpec.episode`), so the output does not depend on the number of workers or on how the
shards are scheduled. scene=all assigns families round-robin: episode i is SCENES[i % 10]. An
unstable simulation (`sim.UnstableSimulation`) is not written; the episode is retried up to `retries`
times with seeds derived from (seed, split, i, attempt), and skipped (its index listed in `skipped`)
if every attempt is unstable. Every unstable attempt counts in `rejected`.

    ds = sim.load_dataset("data/drop")
    ds[0].frames.shape                 # (T, H, W, 3)
    ds.clip(0, 8, 24)                  # an Episode holding frames [8, 24) only, read lazily
    sim.simulate(**ds.recipe(0))       # regenerates episode 0 bit for bit
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine import UnstableSimulation
from sim.episode import Camera, ContactEvent, Episode
from sim.params import SPLITS, ParamError, check_split
from sim.scenes import SCENES, get_family
from sim.simulate import check_render_settings, package_version, realize_params, simulate

SCHEMA = "physfusion-dataset"
SCHEMA_VERSION = 2
STORE = "data.zarr"
MANIFEST = "manifest.json"
CONFIG = "config.json"
TMP = ".tmp"
ALL = "all"
ARRAYS = ("frames", "depth", "segmentation", "times", "states", "actions", "audio")
# Test hook: a process exits abruptly after writing this many episodes (simulates a kill mid-shard).
CRASH_ENV = "PHYSFUSION_TEST_CRASH_AFTER_EPISODES"


class DatasetError(RuntimeError):
    """A dataset cannot be written or read as asked (different config on disk, incomplete...)."""


# --------------------------------------------------------------------------------------------------
# What to generate


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a dataset's content; the same spec gives the same bytes."""

    scene: str = "drop"  # a family in sim.SCENES, or "all" (families round-robin by episode index)
    num_episodes: int = 16
    seed: int = 0
    split: str = "train"  # train | val | ood: the parameter ranges sampled
    width: int = 64
    height: int = 64
    fps: float = 20
    seconds: float | None = None  # episode length; None: each family's default
    params: dict[str, Any] = field(default_factory=dict)  # fixed parameters (scene=all: per family that has them)
    depth: bool = False
    segmentation: bool = False
    shadows: bool = False
    shard_size: int = 16  # episodes per shard (the unit of work and of resumption)
    chunk_frames: int = 8  # frames per compressed chunk (the granularity of random clip access)
    retries: int = 2  # new seeds tried for an episode whose simulation went unstable

    @classmethod
    def from_dict(cls, d: dict) -> DatasetSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ParamError(f"unknown dataset option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(names))}")
        d = dict(d)
        d["params"] = dict(d.get("params") or {})
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("fps", "seconds"):  # fps=20 and fps=20.0 are the same dataset
            if isinstance(d[name], (int, float)) and not isinstance(d[name], bool):
                d[name] = float(d[name])
        return _jsonable(d)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(SCENES) if self.scene == ALL else (self.scene,)

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_episodes / self.shard_size)

    def shard_indices(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_episodes))

    def episode(self, index: int, attempt: int = 0) -> tuple[str, int]:
        """(scene, seed) of episode `index`: a pure function of (seed, split, index, attempt)."""
        scene = self.families[index % len(self.families)]
        key = [self.seed, SPLITS.index(self.split), index] + ([attempt] if attempt else [])
        return scene, int(np.random.SeedSequence(key).generate_state(1)[0])

    def family_params(self, scene: str) -> dict:
        """The fixed parameters that apply to `scene` (scene=all: those the family declares)."""
        if self.scene != ALL:
            return dict(self.params)
        names = set(get_family(scene).params.names())
        return {k: v for k, v in self.params.items() if k in names}

    def simulate_kwargs(self, index: int, attempt: int = 0) -> dict:
        """The `sim.simulate` keyword arguments that produce episode `index` (attempt `attempt`)."""
        scene, seed = self.episode(index, attempt)
        return dict(
            scene=scene, params=self.family_params(scene), seed=seed, seconds=self.seconds, fps=self.fps,
            width=self.width, height=self.height, depth=self.depth, segmentation=self.segmentation,
            shadows=self.shadows, split=self.split,
        )

    def validate(self) -> None:
        """Raise ParamError naming the option, the value and what is allowed; runs a one-frame dry
        run of every family involved, so nothing can fail later for a reason known now."""
        if self.scene != ALL and self.scene not in SCENES:
            raise ParamError(f"parameter 'scene': got {self.scene!r}; allowed: one of {', '.join(SCENES)}, or 'all'")
        check_split(self.split)
        for name, lo in (("num_episodes", 1), ("shard_size", 1), ("chunk_frames", 1), ("retries", 0), ("seed", 0)):
            _check_int(name, getattr(self, name), lo)
        for name in ("width", "height"):
            _check_int(name, getattr(self, name), 16)
        for name in ("depth", "segmentation", "shadows"):
            if not isinstance(getattr(self, name), bool):
                raise ParamError(f"parameter {name!r}: got {getattr(self, name)!r}; allowed: true or false")
        for name in ("fps", "seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ParamError(f"parameter {name!r}: got {value!r}; allowed: a number")
        if not isinstance(self.params, dict):
            raise ParamError(f"parameter 'params': got {self.params!r}; allowed: a mapping of parameter names to values")
        families = {}
        for scene in self.families:
            try:
                families[scene] = get_family(scene)
            except ImportError as err:
                raise ParamError(f"parameter 'scene': family {scene!r} is not available in this installation ({err})") from None
        if self.scene == ALL:
            known = {n for f in families.values() for n in f.params.names()}
            unknown = sorted(set(self.params) - known)
            if unknown:
                raise ParamError(
                    f"scene 'all': unknown parameter(s) {', '.join(map(repr, unknown))}; "
                    f"allowed: a parameter of at least one family: {', '.join(sorted(known))}"
                )
        for scene, family in families.items():
            prefix = f"scene {scene!r}: " if self.scene == ALL else ""
            seconds = family.seconds if self.seconds is None else self.seconds
            _, seed = self.episode(self.families.index(scene))  # the family's first episode
            try:
                check_render_settings(seconds, self.fps, self.width, self.height)
                realize_params(scene, self.family_params(scene), seed, self.split)
                # one frame, no rendering: catches what only the compiled model knows (e.g. fps)
                simulate(scene, self.family_params(scene), seed=seed, seconds=0.05, fps=self.fps, render=False, split=self.split)
            except UnstableSimulation:
                pass
            except ValueError as err:  # ParamError, and fps not a whole number of simulator steps
                raise ParamError(f"{prefix}{err}") from None


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ParamError(f"parameter {name!r}: got {value!r}; allowed: an integer >= {lo}")


# --------------------------------------------------------------------------------------------------
# Writing one shard (runs in a worker process, a Ray task or a Slurm task)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


_episodes_written = 0  # per process, for the crash test hook


def generate_shard(spec: dict, out_dir: str, shard: int, on_episode: Callable[[], None] | None = None) -> dict:
    """Simulate and write the episodes of one shard; return the shard's attributes.

    The shard's episodes are buffered in memory and written at the end, each array with one call
    (the cost of a zarr array is mostly fixed, so it is paid once per shard, not per episode).
    Everything is written under out_dir/.tmp/<unique>/ and renamed to data.zarr/shard-NNNNN at the
    end, so a shard is either complete or absent whatever happens to this process.
    """
    global _episodes_written
    spec_ = DatasetSpec.from_dict(spec)
    out = Path(out_dir)
    final = out / STORE / shard_name(shard)
    if final.exists():  # done meanwhile (e.g. by a duplicate Slurm task)
        return read_shard_info(final)
    tmp = out / TMP / f"{shard_name(shard)}.{uuid.uuid4().hex}"
    tmp.mkdir(parents=True, exist_ok=True)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    writer = ShardWriter(shard)
    rejected, skipped = 0, []
    for index in spec_.shard_indices(shard):
        for attempt in range(spec_.retries + 1):
            kwargs = spec_.simulate_kwargs(index, attempt)
            try:
                episode = simulate(**kwargs)
            except UnstableSimulation:
                rejected += 1
                continue
            writer.add(episode, index=index, attempt=attempt)
            break
        else:
            skipped.append(index)
        _episodes_written += 1
        if crash_after and _episodes_written >= crash_after:
            os._exit(75)  # test hook: die like a killed process, leaving a half-written shard
        if on_episode is not None:
            on_episode()
    info = {
        "shard": shard,
        "start": spec_.shard_indices(shard).start,
        "stop": spec_.shard_indices(shard).stop,
        "episodes": writer.episodes,
        "rejected": rejected,
        "skipped": skipped,
        "frames": writer.frames,
    }
    writer.write(tmp, info, chunk_frames=spec_.chunk_frames)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same shard first
    return info


def read_shard_info(path: Path) -> dict:
    with open(path / "zarr.json") as f:
        return json.load(f)["attributes"]


def episode_arrays(episode: Episode) -> dict[str, np.ndarray]:
    arrays = {name: getattr(episode, name) for name in ARRAYS}
    return {name: np.ascontiguousarray(a) for name, a in arrays.items() if a is not None}


def episode_metadata(episode: Episode) -> dict:
    """The JSON-able metadata of an episode (everything but its arrays)."""
    return _jsonable(
        {
            "scene": episode.scene,
            "seed": episode.seed,
            "split": episode.provenance.get("split"),
            "fps": episode.fps,
            "n_frames": len(episode),
            "audio_rate": episode.audio_rate,
            "body_names": list(episode.body_names),
            "params": episode.params,
            "caption": episode.caption,
            "events": [dict(vars(e)) for e in episode.events],  # flat dataclasses: asdict without its deep copy
            "camera": episode.camera.to_dict() if episode.camera is not None else None,
            "provenance": episode.provenance,
        }
    )


def episode_hash(arrays: dict[str, np.ndarray], meta: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a)  # C-contiguous (episode_arrays): its bytes as they are, without a copy
    h.update(_canonical(meta).encode())
    return h.hexdigest()


IMAGE_ARRAYS = ("frames", "depth", "segmentation")  # chunked by `chunk_frames` frames
SMALL_CHUNK_BYTES = 256 * 1024  # raw bytes per inner chunk at least, for the other arrays
WRITE_BATCH = 64  # inner chunks per codec-pipeline batch


def _compressor(name: str, dtype: np.dtype):
    """Lossless, per array. Zstd (level 3) for all but audio: measured on the benchmark shard, it
    compresses 1.6-2.8x faster than Blosc-zstd (clevel 3) and about as well (frames 38x against 40x,
    depth 71x against 52x, states 3.3x against 2.5x). Audio is noise-like float samples that nothing
    compresses much: byte-shuffled LZ4 (Blosc) gets 1.47x for 1.3 ms of CPU per shard (512k samples),
    byte-shuffled zstd 1.55-1.60x for 5-12 ms."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "audio":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=dtype.itemsize)
    return ZstdCodec(level=3)


def _array_metadata(name: str, a: np.ndarray, chunk_frames: int):
    """zarr v3 metadata of the shard's array `name` holding `a`: one file (zarr's sharding codec) of
    inner chunks, each compressed on its own."""
    import zarr
    from zarr.storage import MemoryStore

    row_bytes = max(1, a[:1].nbytes)
    step = chunk_frames if name in IMAGE_ARRAYS else math.ceil(SMALL_CHUNK_BYTES / row_bytes)
    chunk = (max(1, min(step, a.shape[0])), *a.shape[1:])
    shard_shape = (max(1, math.ceil(a.shape[0] / chunk[0])) * chunk[0], *a.shape[1:])
    # zarr builds the metadata (its defaults included) in memory; nothing is written here
    array = zarr.create_array(
        MemoryStore(), shape=a.shape, dtype=a.dtype, chunks=chunk, shards=shard_shape, fill_value=0,
        compressors=_compressor(name, a.dtype),
    )
    return array.metadata


class ShardWriter:
    """Buffers a shard's episodes, then writes them as one zarr group of concatenated arrays."""

    def __init__(self, shard: int):
        self.shard = shard
        self.episodes: list[dict] = []
        self.arrays: list[dict[str, np.ndarray]] = []
        self.frames = 0
        self.samples = 0

    def add(self, episode: Episode, *, index: int, attempt: int) -> dict:
        """Buffer one episode; return its metadata (its offsets in the shard's arrays included)."""
        arrays = episode_arrays(episode)
        n = len(episode)
        s = len(arrays["audio"]) if "audio" in arrays else 0
        meta = {
            "index": index,
            "key": shard_name(self.shard),
            "shard": self.shard,
            "offset": len(self.episodes),
            "attempt": attempt,
            "frame_start": self.frames,
            "frame_stop": self.frames + n,
            "audio_start": self.samples,
            "audio_stop": self.samples + s,
            **episode_metadata(episode),
            "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str} for name, a in arrays.items()},
        }
        meta["hash"] = episode_hash(arrays, meta)
        self.episodes.append(meta)
        self.arrays.append(arrays)
        self.frames += n
        self.samples += s
        return meta

    def concatenated(self) -> dict[str, np.ndarray]:
        """Each array over the shard's episodes along axis 0; states and actions zero-padded to the
        shard's largest second dimension (max bodies, max action size)."""
        names = [n for n in ARRAYS if any(n in a for a in self.arrays)]
        out = {}
        for name in names:
            parts = [a[name] for a in self.arrays if name in a]
            length = self.samples if name == "audio" else self.frames
            inner = tuple(max(p.shape[k] for p in parts) for k in range(1, parts[0].ndim))
            full = np.zeros((length, *inner), parts[0].dtype)
            for meta, a in zip(self.episodes, self.arrays):
                if name not in a:
                    continue
                start = meta["audio_start"] if name == "audio" else meta["frame_start"]
                x = a[name]
                full[(slice(start, start + len(x)), *(slice(0, d) for d in x.shape[1:]))] = x
            out[name] = full
        return out

    def write(self, path: Path, info: dict, *, chunk_frames: int) -> None:
        """Write the shard group at `path`: its arrays, then its zarr.json with `info` as attributes."""
        import zarr
        from zarr.storage import LocalStore

        path.mkdir(parents=True, exist_ok=True)
        if self.episodes:
            arrays = self.concatenated()
            # zarr's default batch size of 1 sends every inner chunk through the codec pipeline (and
            # its I/O thread) alone; batching them halves the cost of writing a shard. All-zero
            # chunks are stored too: testing every chunk for it costs more (~1 ms per episode) than
            # the few bytes such a chunk compresses to.
            with zarr.config.set({"codec_pipeline.batch_size": WRITE_BATCH, "array.write_empty_chunks": True}):
                nodes = {name: _array_metadata(name, a, chunk_frames) for name, a in arrays.items()}
                # every array's metadata in one call (creating arrays one by one re-reads the parent
                # group's zarr.json for each); the attribute-less root group it makes is replaced below
                created = dict(zarr.create_hierarchy(store=LocalStore(path), nodes=nodes))
                for name, a in arrays.items():
                    created[name][...] = a
        # The group's metadata document, written here rather than through zarr: zarr deep-copies the
        # attributes (~100 KB of episode metadata per shard) and pretty-prints them with the pure-Python
        # JSON encoder, ~20 ms per shard; compact JSON from the C encoder takes ~2 ms.
        group = {"zarr_format": 3, "node_type": "group", "attributes": info}
        (path / "zarr.json").write_text(json.dumps(group))


# --------------------------------------------------------------------------------------------------
# Running a whole dataset


def generate(
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    launcher: str = "local",
    ray_address: str | None = None,
    task: int | None = None,
    num_tasks: int = 1,
    preview_episodes: int = 4,
    progress: bool = True,
) -> dict:
    """Generate (or resume) a dataset; return the summary printed by `physfusion-generate`.

    workers: processes (launcher=local: a spawn-context pool; 1 runs in this process) or Ray CPUs
      for a local Ray instance (launcher=ray without ray_address).
    task, num_tasks: generate only shards s with s % num_tasks == task (one Slurm array task);
      whichever run finds every shard complete writes the preview and the manifest.
    Bad input raises ParamError before anything is written.
    """
    spec.validate()
    _check_int("workers", workers, 1)
    _check_int("num_tasks", num_tasks, 1)
    if task is not None:
        _check_int("task", task, 0)
        if task >= num_tasks:
            raise ParamError(f"parameter 'task': got {task!r}; allowed: an integer in [0, {num_tasks - 1}] (num_tasks={num_tasks})")
    if launcher not in ("local", "ray"):
        raise ParamError(f"parameter 'launcher': got {launcher!r}; allowed: one of 'local', 'ray' (Slurm: see configs/launcher/slurm.yaml)")
    _check_int("preview_episodes", preview_episodes, 0)
    out = Path(out_dir).absolute()
    prepare(out, spec)

    done = completed_shards(out)
    mine = [s for s in range(spec.num_shards) if task is None or s % num_tasks == task]
    pending = [s for s in mine if s not in done]
    start = time.perf_counter()
    new_frames = new_episodes = 0
    total = sum(len(spec.shard_indices(s)) for s in pending)
    from tqdm import tqdm

    with tqdm(total=total, unit="ep", desc=f"generate {spec.scene}", file=sys.stderr, disable=not progress or total == 0) as bar:
        for info in _run_shards(spec, out, pending, workers, launcher, ray_address, bar):
            new_frames += info["frames"]
            new_episodes += len(info["episodes"])
    elapsed = time.perf_counter() - start

    done = completed_shards(out)
    infos = [read_shard_info(out / STORE / shard_name(s)) for s in sorted(done)]
    complete = len(done) == spec.num_shards
    preview = None
    if complete:
        manifest = finalize(out, spec, infos, preview_episodes)
        preview = manifest["preview"]
    return {
        "episodes": sum(len(i["episodes"]) for i in infos),
        "frames": sum(i["frames"] for i in infos),
        "frames_per_s": round(new_frames / elapsed, 1) if new_frames else 0.0,
        "rejected": sum(i["rejected"] for i in infos),
        "bytes_on_disk": _disk_usage(out),
        "out_dir": str(out),
        "preview": str(out / preview) if preview else None,
        "complete": complete,
        "shards_done": len(done),
        "shards_total": spec.num_shards,
        "generated_episodes": new_episodes,
        "seconds": round(elapsed, 2),
    }


def prepare(out: Path, spec: DatasetSpec) -> None:
    """Create out_dir with its config and root group, or check that the config on disk is this one."""
    config = spec.to_dict()
    config_path = out / CONFIG
    if config_path.exists():
        with open(config_path) as f:
            old = json.load(f)
        diff = config_diff(old, config)
        if diff:
            raise DatasetError(
                f"{out} already holds a dataset generated with a different config ({'; '.join(diff)}); "
                "rerun with the same settings to resume it, or choose another out_dir"
            )
    else:
        if (out / STORE).exists() and any((out / STORE).glob("shard-*")):
            raise DatasetError(f"{out / STORE} holds shards but {config_path} is missing; refusing to mix datasets")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config_path, config)
    root = out / STORE / "zarr.json"
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        attrs = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "config": config}
        write_json_atomic(root, {"zarr_format": 3, "node_type": "group", "attributes": attrs})


def config_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} on disk, {new.get(k)!r} requested" for k in keys if old.get(k) != new.get(k)]


def completed_shards(out: Path) -> set[int]:
    store = out / STORE
    if not store.exists():
        return set()
    return {int(p.name.split("-")[1]) for p in store.glob("shard-*") if (p / "zarr.json").exists()}


def exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Worker initializer: end this process when `parent` is gone (killed outright, its pool never
    shut down), so that no orphan goes on writing shards into a folder someone may have reused."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_shards(spec, out, shards, workers, launcher, ray_address, bar) -> Iterator[dict]:
    spec_dict = spec.to_dict()
    if launcher == "ray":
        for info in _run_ray(spec_dict, out, shards, workers, ray_address):
            bar.update(info["stop"] - info["start"])
            yield info
        return
    if workers == 1 or len(shards) <= 1:
        for s in shards:
            yield generate_shard(spec_dict, str(out), s, on_episode=lambda: bar.update(1))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")  # fresh processes: each makes its own GL context
    with ProcessPoolExecutor(min(workers, len(shards)), mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(generate_shard, spec_dict, str(out), s) for s in shards]
        try:
            for future in as_completed(futures):
                info = future.result()
                bar.update(info["stop"] - info["start"])
                yield info
        except BrokenProcessPool:
            raise DatasetError(
                "a worker process died (killed, or out of memory); completed shards are kept: "
                "rerun the same command to resume"
            ) from None
        finally:
            for f in futures:
                f.cancel()


def _run_ray(spec_dict: dict, out: Path, shards: list[int], workers: int, address: str | None) -> Iterator[dict]:
    """One Ray task per shard, on the cluster at `address` or a local instance with `workers` CPUs."""
    if not shards:
        return
    try:
        import ray
    except ImportError:
        raise DatasetError("launcher=ray needs Ray: pip install 'physfusion[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(generate_shard)
        pending = [remote.remote(spec_dict, str(out), s) for s in shards]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


def finalize(out: Path, spec: DatasetSpec, infos: list[dict], preview_episodes: int = 4) -> dict:
    """Write the preview, then the manifest (last, atomically); idempotent."""
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        with open(manifest_path) as f:
            return json.load(f)
    import mujoco
    import zarr

    infos = sorted(infos, key=lambda i: i["shard"])
    episodes = [m for info in infos for m in info["episodes"]]
    config = spec.to_dict()
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "config": config,
        "config_hash": hashlib.sha256(_canonical(config).encode()).hexdigest(),
        "num_requested": spec.num_episodes,
        "num_episodes": len(episodes),
        "num_frames": sum(m["n_frames"] for m in episodes),
        "rejected": sum(i["rejected"] for i in infos),
        "skipped": [s for i in infos for s in i["skipped"]],
        "shards": [shard_name(i["shard"]) for i in infos],
        "hash": hashlib.sha256("".join(m["hash"] for m in episodes).encode()).hexdigest(),
        "provenance": {
            "physfusion": package_version(),
            "mujoco": mujoco.__version__,
            "zarr": zarr.__version__,
            "numpy": np.__version__,
        },
        "preview": None,
        "episodes": episodes,
    }
    if preview_episodes and episodes and "frames" in episodes[0]["arrays"]:
        manifest["preview"] = write_preview(out, episodes[:preview_episodes])
    write_json_atomic(manifest_path, manifest)
    shutil.rmtree(out / TMP, ignore_errors=True)  # leftovers of killed runs
    return manifest


def write_preview(out: Path, episodes: list[dict], tile: int = 128) -> str | None:
    """Tile the episodes' frames in a grid (nearest-neighbour upscaled to >= `tile` px) into
    preview.mp4 (H.264 via imageio-ffmpeg), or preview.gif if that fails. Returns the file name."""
    import imageio.v2 as imageio
    import zarr

    store = zarr.open_group(str(out / STORE), mode="r")
    clips = [read_array(store[m["key"]], m, "frames") for m in episodes if "frames" in m["arrays"]]
    if not clips:
        return None
    fps = episodes[0]["fps"]
    h = max(c.shape[1] for c in clips)
    w = max(c.shape[2] for c in clips)
    scale = max(1, math.ceil(tile / h))
    cols = math.ceil(math.sqrt(len(clips)))
    rows = math.ceil(len(clips) / cols)
    T = max(len(c) for c in clips)
    grid = np.zeros((T, rows * h, cols * w, 3), np.uint8)
    for k, c in enumerate(clips):
        c = np.concatenate([c, np.repeat(c[-1:], T - len(c), axis=0)])  # hold the last frame
        r, q = divmod(k, cols)
        grid[:, r * h : r * h + c.shape[1], q * w : q * w + c.shape[2]] = c
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = grid[:, : grid.shape[1] // 2 * 2, : grid.shape[2] // 2 * 2]  # H.264 wants even sizes
    for name, kwargs in (
        ("preview.mp4", {"fps": fps, "codec": "libx264", "macro_block_size": 1, "ffmpeg_log_level": "error", "pixelformat": "yuv420p"}),
        ("preview.gif", {"duration": 1.0 / fps, "loop": 0}),
    ):
        tmp = out / f".{name}.{uuid.uuid4().hex}{Path(name).suffix}"
        try:
            with imageio.get_writer(tmp, **kwargs) as writer:
                for frame in grid:
                    writer.append_data(frame)
            os.replace(tmp, out / name)
            return name
        except Exception:  # no ffmpeg: fall back to GIF
            tmp.unlink(missing_ok=True)
    return None


# --------------------------------------------------------------------------------------------------
# Reading


class SimDataset(Sequence):
    """A finished dataset: `len(ds)`, `ds[i]` -> sim.Episode, `ds.clip(i, start, stop)` for random
    clip access, `ds.meta(i)` for the manifest entry, `ds.recipe(i)` to regenerate an episode."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            if (self.path / CONFIG).exists():
                done = len(completed_shards(self.path))
                raise DatasetError(
                    f"{self.path} is an incomplete dataset ({done} shards written, no {MANIFEST}); "
                    "rerun the same physfusion-generate command to finish it"
                )
            raise DatasetError(f"{self.path} is not a physfusion dataset (no {MANIFEST})")
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise DatasetError(f"{self.path}: schema_version {self.manifest.get('schema_version')!r}; this reader knows {SCHEMA_VERSION}")
        self.episodes: list[dict] = self.manifest["episodes"]
        self.spec = DatasetSpec.from_dict(self.manifest["config"])
        self._store = None
        self._groups: dict = {}  # shard groups and arrays opened so far (their metadata read once)
        self._arrays: dict = {}

    def __getstate__(self):  # picklable for DataLoader workers: reopen the store lazily
        state = dict(self.__dict__)
        state["_store"], state["_groups"], state["_arrays"] = None, {}, {}
        return state

    @property
    def store(self):
        if self._store is None:
            import zarr

            self._store = zarr.open_group(str(self.path / STORE), mode="r")
        return self._store

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.clip(i)

    def meta(self, i: int) -> dict:
        return self.episodes[i]

    def group(self, i: int):
        """The zarr group (shard) holding episode i."""
        key = self.episodes[i]["key"]
        if key not in self._groups:
            self._groups[key] = self.store[key]
        return self._groups[key]

    def read(self, i: int, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray | None:
        """Array `name` of episode i, frames [start, stop) (audio: samples), or None if absent."""
        meta = self.episodes[i]
        if name not in meta["arrays"]:
            return None
        return read_array(self.group(i), meta, name, start, stop, self._arrays)

    def clip(self, i: int, start: int = 0, stop: int | None = None) -> Episode:
        """Episode i restricted to frames [start, stop), reading only those frames (as Episode.slice)."""
        meta = self.episodes[i]
        n = meta["n_frames"]
        start, stop, _ = slice(start, stop).indices(n)
        if stop <= start:
            raise IndexError(f"empty clip [{start}, {stop}) of episode {i} ({n} frames)")
        fps, rate = meta["fps"], meta["audio_rate"]

        def get(name, a=start, b=stop):
            return self.read(i, name, a, b)

        times = get("times")
        events = [
            ContactEvent(e["time"], e["body_a"], e["body_b"], e["impulse"], tuple(e["position"])) for e in meta["events"]
        ]
        if start > 0 or stop < n:  # as Episode.slice: audio and events of [times[start], times[stop-1] + 1/fps)
            t0, t1 = times[0], times[-1] + 1.0 / fps
            audio = get("audio", int(round(t0 * rate)), int(round(t1 * rate)))
            events = [e for e in events if t0 <= e.time < t1]
        else:
            audio = get("audio", None, None)
        return Episode(
            scene=meta["scene"],
            seed=meta["seed"],
            fps=fps,
            times=times,
            body_names=list(meta["body_names"]),
            states=get("states"),
            params=meta["params"],
            caption=meta["caption"],
            frames=get("frames"),
            depth=get("depth"),
            segmentation=get("segmentation"),
            events=events,
            audio=audio,
            audio_rate=rate,
            actions=get("actions"),
            camera=Camera.from_dict(meta["camera"]) if meta["camera"] else None,
            provenance=meta["provenance"],
        )

    def recipe(self, i: int) -> dict:
        """`sim.simulate` keyword arguments that regenerate episode i exactly."""
        meta = self.episodes[i]
        kwargs = self.spec.simulate_kwargs(meta["index"], meta["attempt"])
        assert kwargs["seed"] == meta["seed"] and kwargs["scene"] == meta["scene"]
        return kwargs


def read_array(group, meta: dict, name: str, start: int | None = None, stop: int | None = None, cache: dict | None = None) -> np.ndarray:
    """Array `name` of the episode `meta` from its shard group: frames [start, stop) (audio:
    samples), read from the shard's concatenated array (only the chunks it overlaps) and cut to
    the episode's own shape (states: its bodies; actions: its action size)."""
    shape = meta["arrays"][name]["shape"]
    base = meta["audio_start"] if name == "audio" else meta["frame_start"]
    a, b, _ = slice(start, stop).indices(shape[0])
    b = max(a, b)
    if cache is None:
        array = group[name]
    else:
        key = (meta["key"], name)
        if key not in cache:
            cache[key] = group[name]
        array = cache[key]
    return array[(slice(base + a, base + b), *(slice(0, d) for d in shape[1:]))]


def load_dataset(path: str | os.PathLike) -> SimDataset:
    """Open a dataset written by `physfusion-generate` (see this module's docstring for the schema)."""
    return SimDataset(path)


# --------------------------------------------------------------------------------------------------
# Small helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, tuples -> lists), exactly round-trippable."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _disk_usage(path: Path) -> int:
    """Bytes of the dataset's files (hidden entries, e.g. .tmp/ and launcher logs, excluded)."""
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in (f for f in files if not f.startswith(".")):
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
