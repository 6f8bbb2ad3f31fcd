"""How much of a world model's disagreement with the simulator is its sampling noise?

    python benchmarks/rlpf_temperature.py start=runs/quality-exact/free/model.safetensors \
        sft=runs/rlpf_free12_300/sft/model.safetensors rlpf=runs/rlpf_free12_300/rlpf/model.safetensors

Evaluates each checkpoint (NAME=PATH, or NAME=PATH,KNOB=VALUE,... with the dynamics gate's knobs
set, `worldmodel.GATE_KNOBS`: the same weights with and without one, in one run; or `step_spread=LOG`
and `frame_spread=LOG`: the same weights drawing their steps, or their pixels, at the spread factor
exp(LOG), as RL fine-tuning learns them) on the held-out queries of `physfusion-rlpf` (the same
queries and rollout seeds as its before/after report with the same --seed, --eval-queries,
--horizon) twice: --samples rollouts per query at temperature 1, as the report samples them, and one
at temperature 0 (every pixel and step its Gaussian's mean: the model's own best guess, without the
noise it samples). Temperature 1 draws the steps and pixels with the model's own spreads, its heads'
times the factors RL fine-tuning may have learnt (`step_spread`, `frame_spread`, printed). With --split, twice more at --samples rollouts: the frames sampled and the dynamics
steps at their mean, and the other way round, to say which noise the disagreement comes from. The
reference is the start's row, in the same run. Prints one table (disagreement rate, median answer
miss by family, long-horizon position error, violations at each temperature) and, last, one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import worldmodel
from rlpf.evaluate import evaluate
from rlpf.queries import FAMILIES, make_queries
from rlpf.rewards import DEFAULT_WEIGHTS
from rlpf_vs_sft import print_breakdown, print_table  # beside this script
from worldmodel.config import GATE_KNOBS, knob_error

SPLIT_FRAMES, SPLIT_STEPS = "frames T=1 steps T=0", "frames T=0 steps T=1"  # --split's row labels
COLUMNS = [  # (key, header, format)
    ("disagreement_rate", "disagreement", "{:.3f}"),
    ("violation_rate", "violations", "{:.3f}"),
    ("position_error_long", "long pos err m", "{:.4f}"),
]


SPREADS = ("step_spread", "frame_spread")  # the model's learnt log-factors a checkpoint's entry may set


def parse_checkpoints(items: list[str]) -> dict[str, tuple[str, dict[str, float], dict[str, float]]]:
    """NAME=PATH[,KNOB=VALUE...][,step_spread=LOG][,frame_spread=LOG] -> {name: (path, gate knobs, spreads set)}."""
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        path, *settings = rest.split(",")
        if not sep or not name or not path:
            raise SystemExit(f"rlpf_temperature: checkpoint {item!r}; allowed: NAME=PATH or NAME=PATH,KNOB=VALUE,...")
        knobs, spreads = {}, {}
        for setting in settings:
            knob, eq, value = setting.partition("=")
            if knob not in {*GATE_KNOBS, *SPREADS} or not eq:
                raise SystemExit(f"rlpf_temperature: checkpoint {item!r}: setting {setting!r}; allowed: KNOB=VALUE, KNOB one of {sorted(GATE_KNOBS)}, step_spread or frame_spread")
            allowed = "a finite number (a log-factor on the spread; 0: the head's own)" if knob in SPREADS else "a number >= 0"
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isnan(number) or (knob in SPREADS and not math.isfinite(number)):
                raise SystemExit(f"rlpf_temperature: checkpoint {item!r}: {knob}={value!r}; allowed: {allowed}")
            (spreads if knob in SPREADS else knobs)[knob] = number
        if error := knob_error(knobs):
            raise SystemExit(f"rlpf_temperature: checkpoint {item!r}: {error}")
        out[name] = (path, knobs, spreads)
    return out


def reduction(value: float, reference: float) -> float | None:
    """1 - value / reference; None where the reference is 0."""
    return 1 - value / reference if reference else None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="NAME=PATH of a model.safetensors; the first is the reference")
    ap.add_argument("--eval-queries", type=int, default=128, help="held-out queries (rlpf_vs_sft.py's default)")
    ap.add_argument("--samples", type=int, default=4, help="rollouts per query at temperature 1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--horizon", type=int, default=40)
    ap.add_argument("--long-horizon-s", type=float, default=1.5)
    ap.add_argument("--split", action="store_true", help="also frames and steps each at temperature 1 with the other at 0")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    checkpoints = parse_checkpoints(args.checkpoints)

    rows, references, queries, spread = {}, {}, None, {}
    for name, (path, knobs, spreads) in checkpoints.items():
        model = worldmodel.load(path, **knobs)
        for key, value in spreads.items():  # the same weights sampling at another spread (e.g. one RL learnt)
            getattr(model, key).data.fill_(value)
        spread[name] = {key: math.exp(getattr(model, key).item()) for key in SPREADS}  # what T=1 draws with, times the head's spread
        if queries is None:
            queries = make_queries(args.eval_queries, split="val", seed=args.seed, context=args.context, horizon=args.horizon, families=list(FAMILIES), image_size=model.cfg.image_size, fps=model.cfg.fps)
        kw = dict(seed=args.seed, long_horizon_s=args.long_horizon_s, weights=DEFAULT_WEIGHTS, tolerance=0.05, references=references)
        settings = [("T=1", 1.0, 1.0, args.samples), ("T=0", 0.0, 0.0, 1)]  # (label, frames' temperature, steps', rollouts)
        if args.split:
            settings += [(SPLIT_FRAMES, 1.0, 0.0, args.samples), (SPLIT_STEPS, 0.0, 1.0, args.samples)]
        for label, temperature, step_temperature, samples in settings:
            rows[f"{name} {label}"] = evaluate(model, queries, samples=samples, temperature=temperature, step_temperature=step_temperature, **kw)
            print(f"evaluated {name}, {label}", file=sys.stderr, flush=True)

    width = max(len(r) for r in rows) + 2
    print_table(rows, COLUMNS, width)
    print_breakdown(rows, "disagreement_by_family", "{:.3f}", "disagreement by family", width)
    print_breakdown(rows, "answer_miss_by_family", "{:.1f}", "answer miss by family (median, in tolerances; <= 1 agrees)", width)
    first = next(iter(checkpoints))
    rate = lambda name, label: rows[f"{name} {label}"]["disagreement_rate"]  # noqa: E731
    summary = {
        name: {
            "noise_share": reduction(rate(name, "T=0"), rate(name, "T=1")),  # of the disagreement at T=1, what the mean rollout avoids
            "reduction_t1": reduction(rate(name, "T=1"), rate(first, "T=1")),
            "reduction_t0": reduction(rate(name, "T=0"), rate(first, "T=0")),
            "step_spread_factor": spread[name]["step_spread"],
            "frame_spread_factor": spread[name]["frame_spread"],
        }
        for name in checkpoints
    }
    if args.split:  # what the steps' mean alone avoids, and the frames' mean alone
        for name, s in summary.items():
            s["step_noise_share"] = reduction(rate(name, SPLIT_FRAMES), rate(name, "T=1"))
            s["frame_noise_share"] = reduction(rate(name, SPLIT_STEPS), rate(name, "T=1"))
        share = lambda x: "-" if x is None else f"{100 * x:.0f}%"  # noqa: E731
        print("\nof the disagreement at T=1, the mean avoids: " + "; ".join(f"{n}: steps' {share(s['step_noise_share'])}, frames' {share(s['frame_noise_share'])}, both {share(s['noise_share'])}" for n, s in summary.items()))
    print("\nlearnt spread factors (exp step_spread, exp frame_spread; 1: the heads' own): " + ", ".join(f"{n} {f['step_spread']:.3f}, {f['frame_spread']:.3f}" for n, f in spread.items()))
    percent = lambda x: "-" if x is None else f"{-100 * x:+.0f}%"  # noqa: E731
    print(f"\ndisagreement against {first}: " + "; ".join(f"{n} {percent(s['reduction_t1'])} at T=1, {percent(s['reduction_t0'])} at T=0" for n, s in summary.items()))
    result = {"rows": rows, "summary": summary}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
