"""`physfusion-train`: a sim dataset -> a world-model checkpoint (a Hydra app).

    physfusion-train data=data/mix model=nano steps=2000 out_dir=runs/nano
    physfusion-train data=sim:all steps=500                      # clips simulated on the fly
    torchrun --nproc_per_node 2 $(which physfusion-train) data=data/mix   # DDP: gloo on CPU, nccl on GPU

Options: configs/train.yaml and configs/model/. AdamW with linear warmup and cosine decay,
gradient clipping, bf16 autocast and optional torch.compile on a GPU. A fraction `state_dropout`
of the clips hides its states from the state tokens, so the model also learns to read motion
from pixels.

Output folder:
    out_dir/model.safetensors          the latest weights (`worldmodel.load` reads it): the summary's "checkpoint"
    out_dir/checkpoints/step-000250/   model.safetensors, optimizer.pt (optimiser and RNG states), state.json
                                       (step, run config, dataset hash); a folder appears atomically
    out_dir/run.json                   the keys that define the run; a rerun with other values is refused
    out_dir/tb/                        TensorBoard: losses, MoE balance and expert use, lr, clips/s, rollouts
    out_dir/videos/step-000500.mp4     a rollout (predicted | simulated | difference)

Batches are a pure function of (seed, step), so an interrupted run resumes exactly: rerunning the
same command continues from the last checkpoint and ends with the weights an uninterrupted run gives.
The last stdout line is a JSON summary (checkpoint, steps, loss, clips_per_s, parameters, ...).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.distributed as dist
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

import sim
from sim.dataset import DatasetError, write_json_atomic
from sim.params import ParamError
from worldmodel.config import MODALITIES, ModelConfig, preset
from worldmodel.data import ClipDataset, SimulatedClipDataset
from worldmodel.model import WorldModel
from worldmodel.moe import expert_usage
from worldmodel.tokens import collate

# keys of configs/train.yaml that define what is trained (the rest may change between resumes)
RUN_KEYS = ("data", "sim_split", "clip_len", "batch_size", "lr", "dynamics_lr_scale", "min_lr", "warmup_steps", "weight_decay", "betas", "grad_clip", "state_dropout", "seed", "model")
CRASH_ENV = "PHYSFUSION_TEST_CRASH_AFTER_STEP"
MAX_NONFINITE_STEPS = 8  # consecutive steps with a non-finite loss or gradient (each skipped) before training stops
LOSS_KEYS = ("loss", "frame_nll", "state_loss", "readout_loss", "step_loss", "chain_loss", "step_nll", "gate_loss", "body_loss", "moe_aux")  # logged and summarised


class TrainError(ValueError):
    """Bad training options, or a run they make diverge: the message names the option, the value and
    what is allowed."""


def divergence(run: str, lr: float, why: str, skipped: int) -> TrainError:
    """The error that stops a `run` ("training", "fine-tuning") whose weights diverged: names lr,
    says why, and how many non-finite updates were skipped (none of them wrote a weight)."""
    return TrainError(f"lr: {run} diverged at lr {lr:g}: {why} ({skipped} skipped in all); the checkpoints hold finite weights; allowed: a smaller lr or a longer warmup_steps")


def skipped_in_a_row(step: int, nonfinite: int) -> str:
    """`divergence`'s why for the last `nonfinite` steps up to `step` (0-based) all skipped."""
    return f"steps {step + 2 - nonfinite}..{step + 1} all had a non-finite loss or gradient and were skipped"


# ----------------------------------------------------------------------------------------------
# data: clips indexed by an integer, batches a pure function of (seed, step)
# ----------------------------------------------------------------------------------------------
class SimulatedClips(Dataset):
    """Map-style view of `SimulatedClipDataset`: item i is a clip of episode i, simulated on demand."""

    def __init__(self, stream: SimulatedClipDataset):
        self.stream = stream

    def __len__(self) -> int:
        return 2**62  # unbounded: a run draws fresh episodes at every step

    def __getitem__(self, i: int) -> sim.Episode:
        for k in range(100):  # an unusable episode (unstable, too short) is replaced by a later one
            clip = self.stream.clip(i + k * 2**40)
            if clip is not None:
                return clip
        raise TrainError(f"data: 100 simulated episodes in a row from index {i} were unusable (unstable or shorter than clip_len)")


def make_dataset(data: str, clip_len: int, split: str, cache_mb: float = 0.0) -> tuple[Dataset, str]:
    """The clips `data` names and the hash that identifies them: a dataset folder (its episodes kept
    in memory up to cache_mb, `ClipDataset`), or sim:<scene>."""
    if data.startswith("sim:"):
        scene = data[4:]
        if scene != "all" and scene not in sim.SCENES:
            raise TrainError(f"data: got {data!r}; allowed: a dataset folder or sim:<scene> with scene in {', '.join(sim.SCENES)} or all")
        stream = SimulatedClipDataset(scene, clip_len, as_episode=True, split=split)
        return SimulatedClips(stream), f"sim:{scene}:{split}:{sim.__name__}"
    path = Path(to_absolute_path(data))
    if not path.exists():
        raise TrainError(f"data: {str(path)!r} does not exist; allowed: a folder written by physfusion-generate, or sim:<scene|all>")
    try:
        clips = ClipDataset(path, clip_len, as_episode=True, cache_mb=cache_mb)
    except ValueError as err:
        raise TrainError(f"clip_len: {err}") from None
    return clips, clips.data.manifest["hash"]


def batch_indices(seed: int, step: int, n_items: int, batch_size: int) -> np.ndarray:
    """The dataset items of step `step`: uniform draws from a generator seeded by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_items, size=batch_size)


def hidden_states(seed: int, step: int, batch_size: int, fraction: float) -> torch.Tensor:
    """(batch_size,) bool: True for the clips of step `step` trained with state tokens present."""
    rng = np.random.default_rng([seed, step, 1])
    return torch.from_numpy(rng.random(batch_size) >= fraction)


class StepBatches:
    """Batch sampler for steps [first, last): this process's share of each step's global batch."""

    def __init__(self, seed: int, first: int, last: int, n_items: int, batch_size: int, rank: int, world: int):
        self.seed, self.first, self.last, self.n_items = seed, first, last, n_items
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def __len__(self) -> int:
        return self.last - self.first

    def __iter__(self):
        for step in range(self.first, self.last):
            yield batch_indices(self.seed, step, self.n_items, self.batch_size)[self.rank :: self.world].tolist()


# ----------------------------------------------------------------------------------------------
# optimisation
# ----------------------------------------------------------------------------------------------
def learning_rate(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warmup to lr over warmup_steps, then cosine decay to min_lr at `steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group of `make_optimizer`'s optimiser to lr times its `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas, dynamics_lr_scale: float = 1.0, spread_lr_scale: float | None = None) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases, norms, embeddings' extra vectors and gains do not. The dynamics
    head's group carries `lr_scale` (its learning rate is lr * dynamics_lr_scale): its outputs are
    physical steps of order 1 that Adam, moving each weight by about lr per step, reaches slowly.
    `step_spread` and `frame_spread` (no supervised loss reaches them) are left out, or with
    spread_lr_scale given those that require grad have a group of their own at that scale (RL
    fine-tuning: one number each, which Adam moves by about its learning rate per step)."""
    spreads = ("step_spread", "frame_spread")
    named = [(n, p) for n, p in model.named_parameters() if n not in spreads]
    groups = []
    for scale, params in ((1.0, [(n, p) for n, p in named if not n.startswith("dynamics_head.")]),
                          (dynamics_lr_scale, [(n, p) for n, p in named if n.startswith("dynamics_head.")])):
        decay = [p for n, p in params if p.ndim >= 2 and "embed.text" not in n]
        rest = [p for n, p in params if not (p.ndim >= 2 and "embed.text" not in n)]
        groups += [{"params": decay, "weight_decay": weight_decay, "lr_scale": scale}, {"params": rest, "weight_decay": 0.0, "lr_scale": scale}]
    if spread_lr_scale is not None:
        groups.append({"params": [getattr(model, n) for n in spreads if getattr(model, n).requires_grad], "weight_decay": 0.0, "lr_scale": spread_lr_scale})
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder exists only once fully written)."""
    root = out / "checkpoints"
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")) if root.exists() else []


def save_checkpoint(out: Path, model: WorldModel, optimizer, step: int, state: dict, keep: int) -> Path:
    """Write checkpoints/step-N/ atomically (a temporary folder renamed), refresh out/model.safetensors."""
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.safetensors")
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng}, tmp / "optimizer.pt")
    write_json_atomic(tmp / "state.json", {**state, "step": step})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    model.save(out / "model.safetensors")
    for old in checkpoint_dirs(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: WorldModel, optimizer) -> dict:
    """Restore weights, optimiser and RNG states from a checkpoint folder; return its state.json
    (the caller's state at saving, with "step")."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path / "model.safetensors")))
    extra = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    torch.set_rng_state(extra["rng"]["torch"])
    if extra["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
    return json.loads((path / "state.json").read_text())


# ----------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------
def model_config(options: dict) -> ModelConfig:
    """configs/model/<name>.yaml -> ModelConfig (the preset with the listed fields as overrides)."""
    fields = dict(options["model"])
    name = fields.pop("name")
    try:
        return preset(name, **fields)
    except TypeError as err:
        raise TrainError(f"model: {err}; allowed: fields of worldmodel.ModelConfig") from None
    except ValueError as err:
        raise TrainError(str(err)) from None


def validate(options: dict) -> None:
    def need(name, ok, allowed):
        if not ok:
            raise TrainError(f"{name}: got {options[name]!r}; allowed: {allowed}")

    for name in ("steps", "batch_size", "clip_len", "ckpt_every", "keep_checkpoints", "log_every"):
        need(name, isinstance(options[name], int) and options[name] >= 1, "an integer >= 1")
    for name in ("warmup_steps", "video_every", "num_workers", "seed"):
        need(name, isinstance(options[name], int) and options[name] >= 0, "an integer >= 0")
    for name in ("lr", "min_lr", "weight_decay", "grad_clip", "dynamics_lr_scale", "cache_mb"):
        need(name, isinstance(options[name], (int, float)) and options[name] >= 0, "a number >= 0")
    need("lr", options["lr"] > 0, "a number > 0")
    need("state_dropout", 0 <= options["state_dropout"] <= 1, "a number in [0, 1]")
    need("precision", options["precision"] in ("auto", "fp32", "bf16"), "auto, fp32 or bf16")
    need("sim_split", options["sim_split"] in sim.SPLITS, " | ".join(sim.SPLITS))


def resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainError(f"device: got {name!r}, but CUDA is not available; allowed: auto or cpu here")
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise TrainError(f"device: got {name!r}; allowed: auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def check_run(out: Path, run: dict) -> None:
    """Refuse to resume into out_dir if it holds a run with a different definition."""
    path = out / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
        if diff:
            raise TrainError(
                f"out_dir: {str(out)!r} holds a run with different {', '.join(diff)} "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); allowed: the same values to resume, or another out_dir"
            )


# ----------------------------------------------------------------------------------------------
# logging
# ----------------------------------------------------------------------------------------------
def flops_per_clip(cfg: ModelConfig, n_tokens: int, active_params: int) -> float:
    """Training FLOPs of one clip: 6 per active parameter per token, plus attention (QK^T and AV,
    forward and backward, over the block-causal half of the L x L scores)."""
    return 6.0 * active_params * n_tokens + 6.0 * cfg.n_layer * n_tokens * n_tokens * cfg.d_model


def log_rollout(model: WorldModel, episode: sim.Episode, context: int, writer, step: int, out: Path) -> None:
    """Roll the first clip forward at temperature 0; log and write it next to the simulator's."""
    import imageio.v3 as iio

    model.eval()
    with torch.no_grad():
        (r,) = model.rollout(episode, context=context, horizon=len(episode) - context, temperature=0.0)
    model.train()
    sim_frames, pred = episode.frames[: len(r.episode)], r.episode.frames
    diff = np.abs(pred.astype(np.int16) - sim_frames.astype(np.int16)).astype(np.uint8)
    strip = np.concatenate([pred, sim_frames, diff], axis=2)  # (T, H, 3W, 3): predicted | simulated | difference
    if writer is not None:
        writer.add_images("rollout/predicted|simulated|difference", strip[::4], step, dataformats="NHWC")
    path = out / "videos" / f"step-{step:06d}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tmp-" + path.name)
    iio.imwrite(tmp, np.repeat(np.repeat(strip, 4, axis=1), 4, axis=2), fps=episode.fps, codec="libx264")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def train(options: dict) -> dict:
    validate(options)
    rank, world, local_rank = distributed()
    device = resolve_device(options["device"], local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if options["batch_size"] % world:
        raise TrainError(f"batch_size: got {options['batch_size']}; allowed: a multiple of the {world} processes")
    cfg = model_config(options)
    out = Path(to_absolute_path(str(options["out_dir"])))
    run = {k: options[k] for k in RUN_KEYS}
    dataset, data_hash = make_dataset(options["data"], options["clip_len"], options["sim_split"], options["cache_mb"])
    run["data_hash"] = data_hash
    check_run(out, run)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "run.json", run)

    torch.manual_seed(options["seed"])
    model = WorldModel(cfg).to(device)
    optimizer = make_optimizer(model, options["lr"], options["weight_decay"], options["betas"], options["dynamics_lr_scale"])
    ckpts = checkpoint_dirs(out)
    saved = load_checkpoint(ckpts[-1], model, optimizer) if ckpts else {"step": 0}
    start = saved["step"]
    if rank == 0:
        print(model.describe(), flush=True)
        if start:
            print(f"resuming from {ckpts[-1]} (step {start})", flush=True)
    steps = options["steps"]
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    if options["compile"]:
        net = torch.compile(net)
    bf16 = options["precision"] == "bf16" or (options["precision"] == "auto" and device.type == "cuda")

    loader = DataLoader(
        dataset,
        batch_sampler=StepBatches(options["seed"], start, steps, len(dataset), options["batch_size"], rank, world),
        num_workers=options["num_workers"],
        collate_fn=partial(collate, cfg=cfg),
        multiprocessing_context="spawn" if options["num_workers"] else None,  # OpenGL does not survive fork
        persistent_workers=False,
    )
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start)
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=start, desc="train", unit="step", file=sys.stderr, disable=rank != 0 or not options["progress"], dynamic_ncols=True)
    state = {"run": run, "config": cfg.to_dict()}
    crash_after = int(os.environ.get(CRASH_ENV, "-1"))
    preview = dataset[0]
    context = min(4, options["clip_len"] - 1)
    n_tokens, clips_seen, t_start, last = None, 0, time.perf_counter(), {}
    skipped = saved.get("skipped_steps", 0)
    nonfinite = 0  # consecutive skipped steps
    model.train()
    for step, batch in zip(range(start, steps), loader):
        lr = learning_rate(step, lr=options["lr"], min_lr=options["min_lr"], warmup_steps=options["warmup_steps"], steps=steps)
        set_lr(optimizer, lr)
        present = hidden_states(options["seed"], step, options["batch_size"], options["state_dropout"])[rank::world]
        batch = replace(batch, state_present=present).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out_step = net(batch)
        optimizer.zero_grad(set_to_none=True)
        out_step["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), options["grad_clip"] if options["grad_clip"] > 0 else math.inf)
        if torch.isfinite(grad_norm):  # the same on every process (after DDP's all-reduce)
            optimizer.step()
            nonfinite = 0
        else:  # a NaN or inf in the loss or its gradient: skip the update (clipping by a non-finite norm would write NaN into every weight)
            skipped, nonfinite = skipped + 1, nonfinite + 1
            if nonfinite == MAX_NONFINITE_STEPS:
                raise divergence("training", lr, skipped_in_a_row(step, nonfinite), skipped)
        clips_seen += options["batch_size"]
        n_tokens = out_step["token_types"].numel()  # sequence length of a clip
        done = step + 1
        if rank == 0:
            bar.update(1)
            if done % options["log_every"] == 0 or done == steps:  # .item() waits for the device: not every step
                last = {k: out_step[k].item() for k in LOSS_KEYS}
                bar.set_postfix(loss=f"{last['loss']:.3f}", nll=f"{last['frame_nll']:.3f}", state=f"{last['state_loss']:.3f}")
                elapsed = time.perf_counter() - t_start
                for k, v in last.items():
                    writer.add_scalar(f"loss/{k}", v, done)
                writer.add_scalar("train/lr", lr, done)
                writer.add_scalar("train/grad_norm", float(grad_norm), done)
                writer.add_scalar("train/skipped_steps", skipped, done)
                writer.add_scalar("train/clips_per_s", clips_seen / elapsed, done)
                usage = expert_usage(out_step["routing"], out_step["token_types"], cfg.n_expert, out_step["token_valid"])
                for m_i, name in enumerate(MODALITIES):
                    if usage[:, m_i].sum() > 0:
                        writer.add_histogram(f"experts/{name}", usage[:, m_i].mean(0), done)
            if done % options["ckpt_every"] == 0 or done == steps:
                state["skipped_steps"] = skipped
                save_checkpoint(out, model, optimizer, done, state, options["keep_checkpoints"])
            if options["video_every"] and done % options["video_every"] == 0 or done == steps:
                log_rollout(model, preview, context, writer, done, out)
        if done == crash_after:
            os._exit(3)
    bar.close()
    elapsed = time.perf_counter() - t_start
    if world > 1:
        dist.barrier()
    if rank != 0:
        return {}
    if start >= steps and not checkpoint_dirs(out):
        save_checkpoint(out, model, optimizer, start, state, options["keep_checkpoints"])
    writer.close()
    summary = {
        "checkpoint": str(out / "model.safetensors"),
        "out_dir": str(out),
        "steps": steps,
        "resumed_from": start,
        "skipped_steps": skipped,
        "parameters": model.num_parameters(),
        "active_parameters": model.num_active_parameters(),
        "clips_per_s": round(clips_seen / elapsed, 3) if clips_seen else None,
        "processes": world,
        "device": str(device),
        **{k: round(v, 5) for k, v in last.items()},
    }
    if options["peak_tflops"] and clips_seen and n_tokens:
        flops = flops_per_clip(cfg, n_tokens, model.num_active_parameters())
        summary["mfu"] = round(flops * clips_seen / elapsed / (options["peak_tflops"] * 1e12), 4)
    return summary


@hydra.main(config_path="pkg://configs", config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> dict:
    options = OmegaConf.to_container(cfg, resolve=True)
    try:
        summary = train(options)
    except (TrainError, ParamError, DatasetError) as err:
        print(f"physfusion-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    if summary:
        print(json.dumps(summary), flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
