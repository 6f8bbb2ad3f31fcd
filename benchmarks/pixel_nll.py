"""The exact pixel NLL's cost: `worldmodel.discretized_gaussian_logprob` against the textbook
formulation of the same quantity, in the same run.

The reference takes log(Phi(b) - Phi(a)) through `torch.special.log_ndtr` with autograd (what the
model did before: accurate, but log_ndtr is ~20x dearer than erfc and autograd keeps a dozen
intermediates). Measured on a training batch (8 simulated 34-frame clips, one per family): its
predicted pixels under the model's frame head, forward and backward, and a whole training step (the
model's forward calling one or the other). Pass a trained checkpoint: an untrained head's spreads
are not a trained one's, and pixels far out in a tail cost more. Runs alternate between the two so that machine load
affects both alike; ratios are medians of within-repeat ratios.

    python benchmarks/pixel_nll.py --checkpoint runs/quality/chain/model.safetensors --repeats 7

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

import sim  # noqa: E402
import worldmodel as wm  # noqa: E402
import worldmodel.model as wm_model  # noqa: E402


class _LogNdtr(torch.autograd.Function):
    """log Phi(x) with the gradient phi / Phi (torch's own log_ndtr backward fails beyond |x| ~ 500)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.special.log_ndtr(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        near = torch.exp(-0.5 * x * x - 0.5 * math.log(2 * math.pi) - y)
        z2 = (x * x).clamp(min=25.0)
        return grad * torch.where(x >= -5, near, -x / (1 - 1 / z2 + 3 / (z2 * z2)))


def reference_logprob(levels: torch.Tensor, mean: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """The same log P(level) as `wm.discretized_gaussian_logprob`, through log_ndtr and autograd."""
    k, mean, inv_std = levels.float(), mean.float(), torch.exp(-logstd.float())
    lo = torch.where(k <= 0, torch.full_like(k, -1e3), (k - 0.5) / 255.0)
    hi = torch.where(k >= 255, torch.full_like(k, 1e3), (k + 0.5) / 255.0)
    a, b = (lo - mean) * inv_std, (hi - mean) * inv_std
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi, log_lo = _LogNdtr.apply(hi), _LogNdtr.apply(lo)
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-12)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each callable per repeat, interleaved; the first repeat warms up and is dropped."""
    out = {name: [] for name in runs}
    for _ in range(repeats + 1):
        for name, fn in runs.items():
            out[name].append(timed(fn))
    return {name: t[1:] for name, t in out.items()}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", default=None, help="a trained world model (model.safetensors), whose frame head gives the pixels' means and spreads (default: an untrained nano)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ours = wm.discretized_gaussian_logprob
    model = (wm.load(args.checkpoint) if args.checkpoint else wm.WorldModel.from_preset("nano")).train()
    cfg = model.cfg
    clips = [sim.simulate(scene, seed=i, seconds=34 / cfg.fps, fps=cfg.fps, width=cfg.image_size, height=cfg.image_size) for i, scene in enumerate(["drop", "collision", "ramp", "stack", "pendulum", "projectile", "push", "table_fall"])]
    batch = wm.collate([c.slice(0, 34) for c in clips], cfg)

    # the pixels of that batch: the frames the head predicts, its means and spreads for them
    with torch.no_grad():
        out = model(batch)
    tt = cfg.tubelet_t
    levels = batch.frames[:, tt:].float()
    mean = out["frame_mean"][:, tt:].clone().requires_grad_()
    logstd = out["frame_logstd"][:, tt:].clone().requires_grad_()
    with torch.no_grad():
        gap = (ours(levels, mean, logstd) - reference_logprob(levels, mean, logstd)).abs().max().item()
    nll = alternate({name: (lambda f=f: f(levels, mean, logstd).sum().backward()) for name, f in (("ours", ours), ("reference", reference_logprob))}, args.repeats)

    def train_step(logprob):
        def run():
            wm_model.discretized_gaussian_logprob = logprob
            try:
                model(batch)["loss"].backward()
            finally:
                wm_model.discretized_gaussian_logprob = ours
            model.zero_grad(set_to_none=True)
        return run

    step = alternate({"ours": train_step(ours), "reference": train_step(reference_logprob)}, args.repeats)
    ratio = lambda t: statistics.median(r / o for o, r in zip(t["ours"], t["reference"]))  # noqa: E731
    result = {
        "checkpoint": args.checkpoint,
        "pixel_values": levels.numel(),
        "nll_seconds": {k: round(statistics.median(v), 4) for k, v in nll.items()},
        "nll_speedup": round(ratio(nll), 2),
        "step_seconds": {k: round(statistics.median(v), 3) for k, v in step.items()},
        "step_speedup": round(ratio(step), 3),
        "max_abs_difference_nats": gap,
        "threads": torch.get_num_threads(),
    }
    print(f"{'':28}{'ours s':>10}{'reference s':>14}{'speed-up':>10}")
    print(f"{'pixel NLL, fwd + bwd':28}{result['nll_seconds']['ours']:>10.3f}{result['nll_seconds']['reference']:>14.3f}{result['nll_speedup']:>10.2f}")
    print(f"{'training step':28}{result['step_seconds']['ours']:>10.3f}{result['step_seconds']['reference']:>14.3f}{result['step_speedup']:>10.3f}")
    print(f"largest difference in log P: {gap:.2e} nats over {levels.numel():,} values")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
