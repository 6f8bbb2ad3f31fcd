"""Training throughput of the world model's backbone against a plain `torch.nn.TransformerEncoder`.

Both get the same tokens: one batch of real clips embedded by the world model's UniToken embedding
(B, L, D), the same block-causal mask, the same width and depth, and one AdamW step per iteration
(forward, backward, update). The reference has a dense 4x GELU MLP; the world model's mixture of
experts has the same active width per token (top_k experts of 4 * d_model / top_k). Also reported:
the whole world model (embedding, heads and losses included) in clips/s.

    python benchmarks/train_throughput.py                      # nano, 34-frame clips, batch 8, CPU
    python benchmarks/train_throughput.py --model base --device cuda --peak-tflops 989

Prints a table, then one JSON line. Iterations alternate between the two models so that machine
load affects both alike; the ratio is the median over repeats of within-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

import sim  # noqa: E402
import worldmodel as wm  # noqa: E402
from worldmodel.tokens import block_causal_mask, clip_layout, n_blocks  # noqa: E402
from worldmodel.train import flops_per_clip  # noqa: E402


class MoEBackbone(torch.nn.Module):
    """The world model's transformer blocks and final norm, run on given embeddings."""

    def __init__(self, model: wm.WorldModel):
        super().__init__()
        self.model = model

    def forward(self, x, layout, valid):
        h, aux, _ = self.model.run(x, layout, valid)
        return h, aux


def timed(step, iters: int, sync) -> float:
    """Seconds per iteration of `step` over `iters` iterations."""
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="nano", choices=list(wm.PRESETS))
    ap.add_argument("--patch", type=int, default=None, help="tubelet side in pixels instead of the preset's (nano: 16)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--clip-len", type=int, default=34)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak to report model FLOPs utilisation")
    args = ap.parse_args()

    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    cfg = wm.preset(args.model, **({} if args.patch is None else {"patch": args.patch}))
    model = wm.WorldModel(cfg).to(dev)
    episodes = [sim.simulate(scene, seed=i, seconds=args.clip_len / cfg.fps + 0.01) for i, scene in enumerate(sim.SCENES)]
    clips = [episodes[i % len(episodes)].slice(0, args.clip_len) for i in range(args.batch)]
    batch = wm.collate(clips, cfg).to(dev)

    # the same tokens for both backbones
    with torch.no_grad():
        inp = model.block_inputs(batch)
        blocks = model.embed.embed_blocks(inp["tubelets"], inp["audio_feat"], inp["audio_present"], inp["actions"], inp["state_feat"], inp["state_present"])
        x = torch.cat([model.embed.embed_text(batch.text, batch.text_values), blocks], dim=1).detach()  # (B, L, D)
    nb = n_blocks(args.clip_len, cfg.tubelet_t)
    layout = clip_layout(cfg, batch.text.shape[1], nb).to(dev)
    valid = torch.cat([batch.text != wm.tokens.PAD, torch.ones(args.batch, nb * cfg.block_len, dtype=torch.bool, device=dev)], dim=1)
    mask = block_causal_mask(layout.block, layout.block, valid)  # (B, 1, L, L) True = attend
    ref = wm.baseline_encoder(cfg).to(dev)
    ref_mask = (~mask).expand(-1, cfg.n_head, -1, -1).reshape(args.batch * cfg.n_head, *mask.shape[-2:])  # True = blocked

    ours = MoEBackbone(model)
    opt_ours = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    amp = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)  # noqa: E731

    def step_ours():
        with amp():
            h, aux = ours(x, layout, valid)
            loss = h.float().pow(2).mean() + 0.01 * aux
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_ref():
        with amp():
            loss = ref(x, mask=ref_mask).float().pow(2).mean()
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        opt_ref.step()

    def step_full():
        with amp():
            out = model(batch)
        opt_ours.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt_ours.step()

    for f in (step_ours, step_ref, step_full):  # warm up
        f()
    rows = {"ours": [], "ref": [], "full": []}
    for _ in range(args.repeats):
        rows["ref"].append(timed(step_ref, args.iters, sync))
        rows["ours"].append(timed(step_ours, args.iters, sync))
        rows["full"].append(timed(step_full, args.iters, sync))
    ratios = [r / o for r, o in zip(rows["ref"], rows["ours"])]
    clips = {k: args.batch / statistics.median(v) for k, v in rows.items()}
    ratio = statistics.median(ratios)
    L = x.shape[1]
    result = {
        "model": args.model,
        "device": str(dev),
        "tokens_per_clip": L,
        "batch": args.batch,
        "backbone_clips_per_s": round(clips["ours"], 2),
        "reference_clips_per_s": round(clips["ref"], 2),
        "ratio_vs_reference": round(ratio, 3),
        "full_model_clips_per_s": round(clips["full"], 2),
    }
    if args.peak_tflops:
        flops = flops_per_clip(cfg, L, model.num_active_parameters())
        result["mfu"] = round(flops * clips["full"] / (args.peak_tflops * 1e12), 4)
    print(f"{model.describe()}; {L} tokens per {args.clip_len}-frame clip, batch {args.batch}, {dev}, threads {torch.get_num_threads()}")
    print(f"{'':44s}{'clips/s':>10s}{'ratio':>8s}{'target':>10s}")
    print(f"{'nn.TransformerEncoder (dense 4x MLP)':44s}{clips['ref']:10.2f}{1.0:8.2f}")
    print(f"{'world-model backbone (block-causal M-MoE)':44s}{clips['ours']:10.2f}{ratio:8.2f}{'>= 1.00':>10s}")
    print(f"{'whole world model (embed, heads, losses)':44s}{clips['full']:10.2f}")
    if "mfu" in result:
        print(f"model FLOPs utilisation: {result['mfu']:.1%}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
