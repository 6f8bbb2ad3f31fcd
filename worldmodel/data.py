"""Torch datasets of fixed-length clips: from a generated dataset on disk, or simulated on the fly.

    ds = ClipDataset("data/drop", clip_len=16)          # random access by (episode, start)
    item = ds[0]                                         # dict of tensors, shapes below
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)

    # the same clips as sim.Episode, for worldmodel.collate:
    eps = ClipDataset("data/drop", 16, as_episode=True)
    batch = worldmodel.collate([eps[i] for i in range(8)], cfg)

    cached = ClipDataset("data/mix", 34, cache_mb=2048)   # whole episodes kept in memory once read

    stream = SimulatedClipDataset("drop", clip_len=16)   # IterableDataset, nothing on disk

Item of length L (n = max_bodies, A = action_dim, S = round(L * audio_rate / fps)):
    frames (L, 3, H, W) float32 in [0, 1]; depth (L, 1, H, W) float32 m and segmentation (L, H, W)
    int64 when the dataset has them; states (L, n, 13) float32 (zero-padded past the episode's
    bodies); body_mask (n,) bool; actions (L, A) float32 (zeros: passive); audio (S,) float32;
    times (L,) float32 s; caption str; scene str; episode, start int.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from sim.dataset import DatasetSpec, load_dataset
from sim.engine import UnstableSimulation
from sim.episode import Episode
from sim.simulate import simulate

DEFAULT_ACTION_DIM = 3  # an external force on the primary body: valid in every family


def clip_tensors(clip: Episode, *, max_bodies: int, action_dim: int, episode: int = -1, start: int = 0) -> dict:
    """An Episode clip (L frames) -> the dict of tensors described in the module docstring."""
    L = len(clip)
    n = clip.states.shape[1]
    if n > max_bodies:
        raise ValueError(f"clip has {n} bodies; allowed: at most max_bodies={max_bodies}")
    states = np.zeros((L, max_bodies, 13), np.float32)
    states[:, :n] = clip.states
    actions = np.zeros((L, action_dim), np.float32)
    if clip.actions is not None:
        actions[:, : clip.actions.shape[1]] = clip.actions
    n_audio = int(round(L * clip.audio_rate / clip.fps))
    audio = np.zeros(n_audio, np.float32)
    if clip.audio is not None:
        audio[: min(n_audio, len(clip.audio))] = clip.audio[:n_audio]
    item = {
        "states": torch.from_numpy(states),
        "body_mask": torch.arange(max_bodies) < n,
        "actions": torch.from_numpy(actions),
        "audio": torch.from_numpy(audio),
        "times": torch.from_numpy(np.asarray(clip.times, np.float32)),
        "caption": clip.caption,
        "scene": clip.scene,
        "episode": episode,
        "start": start,
    }
    if clip.frames is not None:
        item["frames"] = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if clip.depth is not None:
        item["depth"] = torch.from_numpy(np.ascontiguousarray(clip.depth))[:, None]
    if clip.segmentation is not None:
        item["segmentation"] = torch.from_numpy(clip.segmentation.astype(np.int64))
    return item


class ClipDataset(Dataset):
    """Every clip of `clip_len` frames starting at multiples of `stride` in a dataset written by
    `physfusion-generate`; item k is the clip (episode, start) = `self.index[k]`, read lazily (only
    its chunks). `as_episode=True` returns `sim.Episode` clips instead of tensors.

    `cache_mb` > 0 reads whole episodes instead and keeps the most recently used in memory, up to
    that many MB (per process: each DataLoader worker holds its own): training draws every episode
    many times, and a read from the store costs far more than slicing one in memory
    (`benchmarks/clip_reading.py`), time the worker takes from the training step's cores."""

    def __init__(
        self,
        path: str | os.PathLike,
        clip_len: int,
        *,
        stride: int = 1,
        max_bodies: int | None = None,
        action_dim: int | None = None,
        as_episode: bool = False,
        cache_mb: float = 0.0,
    ):
        if clip_len < 1 or stride < 1:
            raise ValueError(f"clip_len and stride: got {clip_len}, {stride}; allowed: integers >= 1")
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb: got {cache_mb!r}; allowed: a number of MB >= 0 (0: no cache)")
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, Episode] = OrderedDict()  # episode position -> the whole episode, least recently used first
        self._cached_bytes = 0
        self.data = load_dataset(path)
        self.clip_len, self.as_episode = clip_len, as_episode
        metas = self.data.episodes
        self.max_bodies = max_bodies or max((len(m["body_names"]) for m in metas), default=1)
        dims = [m["arrays"]["actions"]["shape"][1] for m in metas if "actions" in m["arrays"]]
        self.action_dim = action_dim or max([DEFAULT_ACTION_DIM, *dims])
        index = [(e, s) for e, m in enumerate(metas) for s in range(0, m["n_frames"] - clip_len + 1, stride)]
        if not index:
            longest = max((m["n_frames"] for m in metas), default=0)
            raise ValueError(f"clip_len: got {clip_len}; allowed: at most the longest episode ({longest} frames)")
        self.index = np.asarray(index, np.int64)  # (N, 2): episode, start frame

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        episode, start = (int(v) for v in self.index[k])
        return self.get(episode, start)

    def __getstate__(self):  # what a DataLoader worker receives: no cached episodes
        state = dict(self.__dict__)
        state["_cache"], state["_cached_bytes"] = OrderedDict(), 0
        return state

    def whole(self, episode: int) -> Episode:
        """Episode `episode` (dataset position), whole, from the cache or read into it."""
        if episode in self._cache:
            self._cache.move_to_end(episode)
            return self._cache[episode]
        ep = self.data.clip(episode)
        self._cache[episode] = ep
        self._cached_bytes += _nbytes(ep)
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= _nbytes(old)
        return ep

    def get(self, episode: int, start: int):
        """The clip of episode `episode` (dataset position) starting at frame `start`."""
        if self.cache_bytes and 0 <= start <= self.data.meta(episode)["n_frames"] - self.clip_len:
            clip = self.whole(episode).slice(start, start + self.clip_len)
        else:
            clip = self.data.clip(episode, start, start + self.clip_len)
        if len(clip) != self.clip_len:
            raise IndexError(f"start: got {start}; allowed: [0, {self.data.meta(episode)['n_frames'] - self.clip_len}]")
        if self.as_episode:
            return clip
        return clip_tensors(clip, max_bodies=self.max_bodies, action_dim=self.action_dim, episode=episode, start=start)


def _nbytes(ep: Episode) -> int:
    return sum(a.nbytes for a in (ep.frames, ep.depth, ep.segmentation, ep.states, ep.audio, ep.actions, ep.times) if a is not None)


class SimulatedClipDataset(IterableDataset):
    """Clips simulated on the fly, nothing on disk: episode i is the one `physfusion-generate` would
    write with the same options (same seeds), and its clip start is drawn from the episode's seed.
    Each DataLoader worker simulates a disjoint set of episode indices; `num_episodes=None` streams
    forever."""

    def __init__(
        self,
        scene: str,
        clip_len: int,
        *,
        num_episodes: int | None = None,
        max_bodies: int = 8,
        action_dim: int = DEFAULT_ACTION_DIM,
        as_episode: bool = False,
        **options,  # DatasetSpec fields: seed, split, width, height, fps, seconds, params, depth, ...
    ):
        self.spec = DatasetSpec.from_dict({"scene": scene, "num_episodes": num_episodes or 1, **options})
        self.spec.validate()
        self.clip_len, self.num_episodes = clip_len, num_episodes
        self.max_bodies, self.action_dim, self.as_episode = max_bodies, action_dim, as_episode

    def clip(self, index: int):
        """The clip of episode `index`, or None if every attempt was unstable or the episode is
        shorter than clip_len."""
        for attempt in range(self.spec.retries + 1):
            kwargs = self.spec.simulate_kwargs(index, attempt)
            try:
                episode = simulate(**kwargs)
            except UnstableSimulation:
                continue
            if len(episode) < self.clip_len:
                return None
            start = int(np.random.default_rng(kwargs["seed"]).integers(len(episode) - self.clip_len + 1))
            clip = episode.slice(start, start + self.clip_len)
            if self.as_episode:
                return clip
            return clip_tensors(clip, max_bodies=self.max_bodies, action_dim=self.action_dim, episode=index, start=start)
        return None

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = worker
        while self.num_episodes is None or index < self.num_episodes:
            item = self.clip(index)
            if item is not None:
                yield item
            index += workers
