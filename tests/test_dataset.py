"""The dataset engine in-process: round trip against sim.simulate, the zarr schema read with zarr
alone, seeds, validation, unstable episodes, and the torch clip datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sim
import sim.dataset as dataset
from sim.dataset import DatasetError, DatasetSpec, generate, load_dataset

SMALL = dict(scene="drop", num_episodes=3, shard_size=2, seconds=0.5, width=32, height=32, depth=True, segmentation=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "data"
    s = generate(DatasetSpec(**SMALL), out, workers=1, progress=False, preview_episodes=2)
    assert s["complete"] and s["episodes"] == 3 and s["frames"] == 30
    return out


def assert_same_episode(a: sim.Episode, b: sim.Episode) -> None:
    for name in ("frames", "depth", "segmentation", "times", "states", "actions", "audio"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
    for name in ("scene", "seed", "fps", "body_names", "params", "caption", "events", "audio_rate", "provenance"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.camera.to_dict() == b.camera.to_dict()


def test_round_trip_equals_simulate(small):
    ds = sim.load_dataset(small)
    assert len(ds) == 3
    for i in range(len(ds)):
        episode = ds[i]
        fresh = sim.simulate("drop", seed=episode.seed, seconds=0.5, width=32, height=32, depth=True, segmentation=True)
        assert_same_episode(episode, fresh)
        assert ds.recipe(i)["seed"] == episode.seed
    assert ds[-1].seed == ds[2].seed and len(ds[0:2]) == 2


def test_clip_reads_the_same_as_episode_slice(small):
    ds = load_dataset(small)
    assert_same_episode(ds.clip(1, 3, 8), ds[1].slice(3, 8))
    assert np.array_equal(ds.read(2, "frames", 4, 6), ds[2].frames[4:6])
    with pytest.raises(IndexError):
        ds.clip(0, 9, 9)


def test_schema_readable_with_zarr_alone(small):
    import zarr

    manifest = json.loads((small / "manifest.json").read_text())
    assert manifest["schema_version"] == dataset.SCHEMA_VERSION and manifest["num_episodes"] == 3
    assert manifest["config"] == json.loads((small / "config.json").read_text())
    root = zarr.open_group(str(small / "data.zarr"), mode="r")
    assert root.attrs["schema"] == "physfusion-dataset"
    assert sorted(root.group_keys()) == manifest["shards"] == ["shard-00000", "shard-00001"]
    ds = load_dataset(small)
    for i, meta in enumerate(manifest["episodes"]):
        group = root[meta["key"]]  # the episode's shard: arrays concatenated over its episodes
        assert meta["key"] == f"shard-{i // 2:05d}"
        assert group.attrs["episodes"][meta["offset"]] == meta  # metadata stored once, in the shard
        assert meta["shard"] == i // 2 and meta["offset"] == i % 2
        a, b = meta["frame_start"], meta["frame_stop"]
        assert b - a == meta["n_frames"] == 10
        frames = group["frames"][a:b]
        assert frames.shape == (10, 32, 32, 3) and frames.dtype == np.uint8
        n = len(meta["body_names"])
        most = max(len(m["body_names"]) for m in group.attrs["episodes"])  # padded to the shard's most bodies
        assert group["states"].shape[1:] == (most, 13) and group["states"].shape[0] == group["frames"].shape[0]
        assert not group["states"][a:b, n:].any()
        assert meta["arrays"]["states"]["shape"] == [10, n, 13]
        assert group["segmentation"].dtype == np.int32 and group["depth"].dtype == np.float32
        assert np.array_equal(frames, ds[i].frames)
        assert np.array_equal(group["states"][a:b, :n], ds[i].states)
        audio = group["audio"][meta["audio_start"] : meta["audio_stop"]]
        assert np.array_equal(audio, ds[i].audio)
    shard = root["shard-00001"]
    assert shard.attrs["episodes"] == manifest["episodes"][2:] and shard.attrs["rejected"] == 0
    assert list(shard.group_keys()) == []  # no per-episode groups
    assert root["shard-00000"]["frames"].shape[0] == 20 and root["shard-00000"]["frames"].chunks[0] == 8
    assert (small / "preview.mp4").exists() or (small / "preview.gif").exists()


def test_episode_seeds_depend_only_on_seed_split_and_index():
    a = DatasetSpec(num_episodes=100, shard_size=4)
    b = DatasetSpec(num_episodes=7, shard_size=16, width=128)
    assert [a.episode(i) for i in range(7)] == [b.episode(i) for i in range(7)]
    seeds = {a.episode(i)[1] for i in range(100)}
    assert len(seeds) == 100
    assert a.episode(0) != DatasetSpec(seed=1).episode(0) != DatasetSpec(split="ood").episode(0)
    assert a.episode(3, attempt=1) != a.episode(3)
    mixed = DatasetSpec(scene="all")
    assert [mixed.episode(i)[0] for i in range(12)] == [sim.SCENES[i % len(sim.SCENES)] for i in range(12)]


@pytest.mark.parametrize(
    "options, names",
    [
        (dict(scene="nope"), ["'scene'", "'nope'", "'all'"]),
        (dict(params={"mass": 0.0}), ["'mass'", "0.0", "(0, 1000]"]),
        (dict(params={"height": -1}), ["'height'", "-1", "[0, 6]"]),
        (dict(params={"bogus": 1}), ["'bogus'", "allowed"]),
        (dict(fps=7), ["'fps'", "7"]),
        (dict(split="test"), ["'split'", "'test'", "ood"]),
        (dict(num_episodes=0), ["'num_episodes'", ">= 1"]),
        (dict(shard_size=0), ["'shard_size'"]),
        (dict(seconds=0.0), ["'seconds'"]),
        (dict(seed=-1), ["'seed'"]),
    ],
)
def test_bad_spec_raises_before_anything_is_written(tmp_path, options, names):
    with pytest.raises(sim.ParamError) as err:
        generate(DatasetSpec(**{**SMALL, **options}), tmp_path / "out", progress=False)
    for name in names:
        assert name in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unstable_episodes_are_retried_then_skipped(tmp_path, monkeypatch):
    spec = DatasetSpec(**{**SMALL, "num_episodes": 3, "shard_size": 3, "retries": 1, "depth": False, "segmentation": False})
    unstable = {spec.episode(0)[1], spec.episode(1)[1], spec.episode(1, attempt=1)[1]}
    real = dataset.simulate

    def flaky(*args, **kwargs):
        if kwargs["seed"] in unstable:
            raise sim.UnstableSimulation("test: blown up")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "simulate", flaky)
    s = generate(spec, tmp_path / "out", progress=False, preview_episodes=0)
    assert (s["episodes"], s["rejected"]) == (2, 3)
    ds = load_dataset(tmp_path / "out")
    assert ds.manifest["skipped"] == [1] and ds.manifest["rejected"] == 3
    assert [(m["index"], m["attempt"], m["offset"]) for m in ds.episodes] == [(0, 1, 0), (2, 0, 1)]
    assert ds[0].seed == spec.episode(0, attempt=1)[1] == ds.recipe(0)["seed"]


def test_incomplete_dataset_says_how_to_finish(tmp_path):
    spec = DatasetSpec(**{**SMALL, "num_episodes": 2, "shard_size": 1, "depth": False, "segmentation": False})
    s = generate(spec, tmp_path, progress=False, task=0, num_tasks=2)
    assert not s["complete"] and s["shards_done"] == 1
    with pytest.raises(DatasetError, match="rerun"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="different config"):
        generate(DatasetSpec(**{**SMALL, "num_episodes": 2, "shard_size": 1}), tmp_path, progress=False)


def test_clip_dataset(small):
    torch = pytest.importorskip("torch")
    from worldmodel.data import ClipDataset

    ds = ClipDataset(small, clip_len=4, stride=2)
    assert len(ds) == 3 * 4  # starts 0, 2, 4, 6 in each 10-frame episode
    item = ds[5]
    episode, start = int(item["episode"]), int(item["start"])
    assert (episode, start) == (1, 2)
    source = load_dataset(small)[1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert torch.equal(item["frames"], torch.from_numpy(source.frames[2:6]).permute(0, 3, 1, 2).float() / 255)
    n = len(source.body_names)
    assert torch.equal(item["states"][:, :n], torch.from_numpy(source.states[2:6]).float())
    assert int(item["body_mask"].sum()) == n and item["states"].shape[1] == ds.max_bodies
    assert item["audio"].shape == (4 * 16000 // 20,) and item["actions"].shape == (4, 3)
    assert item["caption"] == source.caption and item["depth"].shape == (4, 1, 32, 32)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6, shuffle=True, num_workers=0)))
    assert batch["frames"].shape == (6, 4, 3, 32, 32) and len(batch["caption"]) == 6
    assert_same_episode(ClipDataset(small, 4, as_episode=True).get(2, 6), load_dataset(small)[2].slice(6, 10))
    with pytest.raises(ValueError, match="clip_len"):
        ClipDataset(small, clip_len=11)


def test_cached_clips_are_the_stored_clips_and_the_cache_keeps_its_bound(small):
    pytest.importorskip("torch")
    import pickle

    from worldmodel.data import ClipDataset

    plain = ClipDataset(small, 4, as_episode=True)
    one_episode = plain.whole(0)
    size_mb = sum(a.nbytes for a in (one_episode.frames, one_episode.depth, one_episode.states, one_episode.audio, one_episode.times) if a is not None) / 2**20
    cached = ClipDataset(small, 4, as_episode=True, cache_mb=1.5 * size_mb)  # room for one episode, not two
    for episode, start in [(0, 0), (1, 3), (0, 6), (2, 2), (2, 6)]:
        assert_same_episode(cached.get(episode, start), plain.data.clip(episode, start, start + 4))
        assert len(cached._cache) == 1 and cached._cached_bytes <= cached.cache_bytes
    assert list(cached._cache) == [2]
    assert pickle.loads(pickle.dumps(cached))._cache == {}  # a DataLoader worker starts empty
    with pytest.raises(ValueError, match="cache_mb"):
        ClipDataset(small, 4, cache_mb=-1)


def test_simulated_clips_match_the_generated_dataset(small):
    pytest.importorskip("torch")
    from worldmodel.data import SimulatedClipDataset

    options = {k: v for k, v in SMALL.items() if k not in ("scene", "num_episodes")}
    items = list(SimulatedClipDataset("drop", 4, num_episodes=2, **options))
    ds = load_dataset(small)
    assert [int(it["episode"]) for it in items] == [0, 1]
    for it in items:
        start = int(it["start"])
        assert np.array_equal(it["frames"].mul(255).round().byte().permute(0, 2, 3, 1).numpy(), ds[it["episode"]].frames[start : start + 4])


def test_shard_pads_bodies_and_actions_and_reads_back_each_episode(tmp_path):
    """A shard's arrays are concatenated over its episodes: different body counts and passive next
    to actuated episodes are zero-padded, and `read_array` gives each episode back unpadded."""
    import dataclasses

    import zarr

    one = sim.simulate("drop", params={"num_objects": 1}, seed=1, seconds=0.5, width=16, height=16)
    three = sim.simulate("drop", params={"num_objects": 3}, seed=2, seconds=0.5, width=16, height=16)
    actuated = dataclasses.replace(one, actions=np.arange(len(one) * 3, dtype=np.float32).reshape(-1, 3))
    writer = dataset.ShardWriter(7)
    for k, episode in enumerate((one, three, actuated)):
        writer.add(episode, index=k, attempt=0)
    writer.write(tmp_path / "shard", {"episodes": writer.episodes}, chunk_frames=4)
    group = zarr.open_group(str(tmp_path / "shard"), mode="r")
    assert group.attrs["episodes"] == writer.episodes  # the group document, written by the writer itself
    assert group["states"].shape == (30, 3, 13) and group["actions"].shape == (30, 3)
    assert [type(c).__name__ for c in group["frames"].compressors] == ["ZstdCodec"]
    assert [(c.cname.value, c.shuffle.value) for c in group["audio"].compressors] == [("lz4", "shuffle")]
    assert group["frames"].chunks == (4, 16, 16, 3)  # images: chunk_frames frames per chunk
    assert group["states"].chunks == (30, 3, 13)  # the rest: >= SMALL_CHUNK_BYTES, here the whole shard
    for meta, episode in zip(writer.episodes, (one, three, actuated)):
        assert meta["key"] == "shard-00007" and meta["frame_stop"] - meta["frame_start"] == len(episode)
        for name in ("frames", "times", "states", "audio", "actions"):
            expected = getattr(episode, name)
            got = dataset.read_array(group, meta, name) if name in meta["arrays"] else None
            assert (expected is None) == (got is None), name
            if expected is not None:
                assert got.dtype == expected.dtype and np.array_equal(got, expected), name
        assert np.array_equal(dataset.read_array(group, meta, "states", 2, 7), episode.states[2:7])
    assert not group["actions"][:20].any()  # passive episodes: zero rows


def test_shard_without_episodes_is_a_group_of_attributes(tmp_path):
    """Every episode of a shard skipped: the shard is still a zarr group, holding only its attributes."""
    import zarr

    info = {"shard": 3, "start": 6, "stop": 8, "episodes": [], "rejected": 6, "skipped": [6, 7], "frames": 0}
    dataset.ShardWriter(3).write(tmp_path / "shard", info, chunk_frames=8)
    group = zarr.open_group(str(tmp_path / "shard"), mode="r")
    assert group.attrs.asdict() == info and list(group.array_keys()) == []
    assert dataset.read_shard_info(tmp_path / "shard") == info
