"""The world model against its baselines: generate, train the default model, evaluate, in one run.

    python benchmarks/world_model_quality.py                       # nano, 1500 steps (~30 min on 2 cores)
    python benchmarks/world_model_quality.py --steps 300 --episodes 300 --eval-episodes 50   # a quick look
    python benchmarks/world_model_quality.py --steps 600 --name one-step +model.chain_weight=0.0  # an ablation
    python benchmarks/world_model_quality.py --steps 1800 --name gate2 --gate-override 1.0  # the trained run, another gate threshold

Runs the real commands: `physfusion-generate` (a mixed training set, held-out val and ood sets of 2 s
episodes), `physfusion-train` (the default `nano` model), `physfusion-evaluate` (4 context frames,
30 predicted = 1.5 s, with the caption ablation). Datasets and runs already complete are reused
(every command resumes). Prints, per family, the model's position error over the horizon against
each baseline and the ratio to the best baseline (< 1: the model wins), the OOD/ID ratio, the caption
ablation on bounce and collision families, and the training wall time; then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import worldmodel
from rest_drift import add_gate_options

BASELINES = ("copy_last", "constant_velocity", "constant_acceleration")
KNOB_SUFFIX = {"gate_override": "g", "override_reach": "r", "free_flight_tolerance": "f", "free_swing": "s", "floor_support": "fl", "accel_tolerance": "a", "release_reach": "rel"}  # the evaluation folder's name for each knob set


def command(name: str, *args: str) -> dict:
    """Run a physfusion command; return its JSON summary (the last stdout line)."""
    proc = subprocess.run([shutil.which(name), *args], capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    if proc.returncode != 0:
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def video_line(dataset: dict) -> str:
    """The predicted frames' PSNR against copy-last's (temperature 0), overall and per family: where
    the two are equal, the predicted video holds the last context frame and the motion is in the
    states alone."""
    psnr = lambda s: f"{s['psnr_db']['model']:.2f}/{s['psnr_db']['copy_last']:.2f}"  # noqa: E731
    families = ", ".join(f"{f} {psnr(s)}" for f, s in dataset["families"].items())
    return f"video PSNR dB, model/copy_last: all {psnr(dataset['overall'])} ({families})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="runs/quality", help="folder for the datasets, the run and the report")
    ap.add_argument("--episodes", type=int, default=1500, help="training episodes (every family, 2 s each)")
    ap.add_argument("--eval-episodes", type=int, default=200, help="held-out episodes per split (val, ood)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--model", default="nano")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--name", default=None, help="run and evaluation folder name under --root (default: the model)")
    add_gate_options(ap)  # evaluate with the dynamics gate's knobs set (physfusion-evaluate gate_override= ...)
    ap.add_argument("train_overrides", nargs="*", help="extra physfusion-train overrides, e.g. +model.chain_weight=0.0")
    args = ap.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)

    common = ["scene=all", "seconds=2.0", f"workers={args.workers}", "progress=false"]
    command("physfusion-generate", *common, f"num_episodes={args.episodes}", "seed=0", f"out_dir={root}/mix")
    command("physfusion-generate", *common, f"num_episodes={args.eval_episodes}", "seed=1", "split=val", "segmentation=true", f"out_dir={root}/val")
    command("physfusion-generate", *common, f"num_episodes={args.eval_episodes}", "seed=2", "split=ood", "segmentation=true", f"out_dir={root}/ood")

    t = time.perf_counter()
    name = args.name or args.model
    train = command("physfusion-train", f"data={root}/mix", f"model={args.model}", f"steps={args.steps}", f"out_dir={root}/{name}", "progress=false", *args.train_overrides)
    train_minutes = (time.perf_counter() - t) / 60
    knobs = {knob: getattr(args, knob) for knob in worldmodel.GATE_KNOBS if getattr(args, knob) is not None}
    eval_dir = f"{root}/eval" + ("" if args.name is None else f"-{name}") + "".join(f"-{KNOB_SUFFIX[k]}{v:g}" for k, v in knobs.items())
    gate = [f"{k}={v}" for k, v in knobs.items()]
    evaluate = command("physfusion-evaluate", f"checkpoint={train['checkpoint']}", f"data={root}/val", f"ood_data={root}/ood", f"out_dir={eval_dir}", "progress=false", *gate)
    report = json.loads(Path(evaluate["report"]).read_text())

    families = report["datasets"]["id"]["families"]
    print(f"\n{args.model}: {train['parameters']:,} parameters, {train['steps']} steps; this run trained for {train_minutes:.1f} min "
          f"(resumed from step {train['resumed_from']}), {train['clips_per_s']} clips/s")
    print("position error over a 1.5 s rollout from 4 context frames, m (held-out val episodes)")
    print(f"{'family':<12}{'model':>9}" + "".join(f"{b[:14]:>16}" for b in BASELINES) + f"{'model/best':>12}{'wins':>6}")
    rows = {}
    for family, s in list(families.items()) + [("all", report["datasets"]["id"]["overall"])]:
        err = {k: v["mean"] for k, v in s["position_error_m"].items()}
        best = min(err[b] for b in BASELINES)
        ratio = err["model"] / best if best > 0 else float("inf")
        rows[family] = {"model": err["model"], **{b: err[b] for b in BASELINES}, "ratio_to_best_baseline": ratio}
        print(f"{family:<12}{err['model']:>9.4f}" + "".join(f"{err[b]:>16.4f}" for b in BASELINES) + f"{ratio:>12.2f}{'yes' if ratio < 1 else 'no':>6}")
    ood = report.get("ood_id_ratio", {}).get("overall")
    ood_m = report["datasets"].get("ood", {}).get("overall", {}).get("position_error_m", {}).get("model", {}).get("mean")
    print(f"OOD / ID position error: {ood:.2f} (target <= 2)" + ("" if ood_m is None else f"; OOD {ood_m:.3f} m, ID {rows['all']['model']:.3f} m"))
    print(video_line(report["datasets"]["id"]))
    ablation = report.get("caption_ablation", {})
    if ablation.get("episodes"):
        for event in ("bounced", "collided"):
            acc = {k: ablation[k]["events"].get(event, {}).get("accuracy") for k in ("caption", "shuffled", "removed")}
            timing = {k: ablation[k]["events"].get(event, {}).get("timing_error_s") for k in ("caption", "shuffled", "removed")}
            print(f"{event}: accuracy {acc}, timing error s {timing}")
        print("caption ablation, position error m: " + ", ".join(f"{k} {ablation[k]['position_error_m']:.4f}" for k in ("caption", "shuffled", "removed")))
        for family in ("drop", "collision"):
            errs = {k: ablation[k]["families"].get(family, {}).get("position_error_m") for k in ("caption", "shuffled", "removed")}
            print(f"  {family}: " + ", ".join(f"{k} {v:.4f}" for k, v in errs.items() if v is not None))
    wins = sum(r["ratio_to_best_baseline"] < 1 for f, r in rows.items() if f != "all")
    print(json.dumps({"model": args.model, "steps": train["steps"], "train_minutes": round(train_minutes, 1), "families_won": f"{wins}/{len(families)}",
                      "ood_id_ratio": ood, "position_error_m": rows, "psnr_db": report["datasets"]["id"]["overall"]["psnr_db"], "caption_ablation": ablation.get("position_error_m") and {k: ablation[k]["position_error_m"] for k in ("caption", "shuffled", "removed")},
                      "report": evaluate["report"]}))


if __name__ == "__main__":
    main()
