"""`physfusion-evaluate`: a checkpoint + held-out data -> physics and pixel metrics against baselines,
plots and side-by-side videos (a Hydra app).

    physfusion-evaluate checkpoint=runs/nano/model.safetensors data=data/val ood_data=data/ood
    physfusion-evaluate checkpoint=runs/nano data=data/val max_episodes=50 horizon=20 caption_ablation=false

Every episode is rolled forward from its first `context` frames for `horizon` frames by the model
and by the baselines (`worldmodel.baselines`), which see the same context frames and states. The
first min(n_bodies, model.cfg.n_max_objects) bodies of each episode are scored (`worldmodel.metrics`).

Writes into out_dir: report.json (per dataset, per family and overall: position and velocity error
over the horizon, frame-parsed position error and the parser's floor, PSNR/SSIM, event accuracy;
the OOD/ID ratio, the caption ablation, `wins`, expert use by modality and by family), plots/position_error_<dataset>.png (error against
horizon time, per family, model against baselines) and videos/<dataset>-<episode>-<family>.mp4
(predicted | simulated | |difference|). A table goes to stderr; the last stdout line is a JSON
summary. Bad input exits with status 2 and a one-line message, before anything is written.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from tqdm import tqdm

from sim.dataset import DatasetError, SimDataset, load_dataset
from sim.episode import Episode
import worldmodel
from worldmodel import metrics
from worldmodel.baselines import BASELINES
from worldmodel.config import knob_error

MODEL = "model"
SHUFFLED, REMOVED = "model_caption_shuffled", "model_caption_removed"
PREDICTORS = (MODEL, *BASELINES)
FRAME_PREDICTORS = (MODEL, "copy_last")  # those that predict frames
FLOOR = "parser_floor"  # the centroid parser on the simulated frames


class ConfigError(ValueError):
    """Bad input: exit status 2 with this one-line message."""


# --- input checks ---------------------------------------------------------------------------------


def _path(cfg: DictConfig, key: str) -> Path:
    if OmegaConf.is_missing(cfg, key):
        raise ConfigError(f"parameter {key!r}: missing; allowed: a path ({key}=PATH)")
    return Path(to_absolute_path(str(cfg[key])))  # relative to where the command was run


def _integer(cfg: DictConfig, key: str, low: int) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"parameter {key!r}: got {value!r}; allowed: an integer >= {low}")
    return value


def check_options(cfg: DictConfig) -> dict:
    """Every option checked and resolved (paths absolute); raises ConfigError."""
    checkpoint = _path(cfg, "checkpoint")
    file = checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint
    if not file.is_file():
        problem = "a directory without model.safetensors" if checkpoint.is_dir() else "which does not exist"
        raise ConfigError(f"parameter 'checkpoint': got {str(checkpoint)!r}, {problem}; allowed: a model.safetensors file or a directory holding one")
    opts = {
        "checkpoint": file,
        "data": _path(cfg, "data"),
        "ood_data": None if cfg.ood_data is None else _path(cfg, "ood_data"),
        "context": _integer(cfg, "context", 3),  # the constant-acceleration baseline fits a quadratic
        "horizon": _integer(cfg, "horizon", 1),
        "max_episodes": None if cfg.max_episodes is None else _integer(cfg, "max_episodes", 1),
        "samples": _integer(cfg, "samples", 1),
        "videos": _integer(cfg, "videos", 0),
        "seed": _integer(cfg, "seed", 0),
        "temperature": cfg.temperature,
        **{knob: cfg[knob] for knob in worldmodel.GATE_KNOBS},
        "caption_ablation": cfg.caption_ablation,
        "device": str(cfg.device),
        "out_dir": Path(to_absolute_path(str(cfg.out_dir))),
        "progress": bool(cfg.progress),
    }
    if isinstance(opts["temperature"], bool) or not isinstance(opts["temperature"], (int, float)) or not opts["temperature"] >= 0:
        raise ConfigError(f"parameter 'temperature': got {opts['temperature']!r}; allowed: a number >= 0")
    knobs = knob_error({knob: opts[knob] for knob in worldmodel.GATE_KNOBS})
    if knobs:
        raise ConfigError(knobs)
    if not isinstance(opts["caption_ablation"], bool):
        raise ConfigError(f"parameter 'caption_ablation': got {opts['caption_ablation']!r}; allowed: true, false")
    return opts


def open_dataset(key: str, path: Path, opts: dict, model_cfg) -> SimDataset:
    """The dataset at `path`, checked against the options and the model; raises ConfigError."""
    if not path.exists():
        raise ConfigError(f"parameter {key!r}: got {str(path)!r}, which does not exist; allowed: a dataset directory written by physfusion-generate")
    try:
        ds = load_dataset(path)
    except DatasetError as err:
        raise ConfigError(f"parameter {key!r}: {err}") from None
    metas = ds.episodes[: opts["max_episodes"]]
    if not metas:
        raise ConfigError(f"parameter {key!r}: {str(path)!r} holds no episodes; allowed: a dataset with at least one")
    need = opts["context"] + opts["horizon"]
    short = min(metas, key=lambda m: m["n_frames"])
    if short["n_frames"] < need:
        raise ConfigError(
            f"parameter 'horizon': got {opts['horizon']} (context {opts['context']} + horizon = {need} frames); allowed: "
            f"context + horizon <= {short['n_frames']}, the shortest episode in {key} ({short['scene']}; or generate longer "
            f"episodes with physfusion-generate seconds=...)"
        )
    size = {(m["camera"]["width"], m["camera"]["height"]) for m in metas}
    if size != {(model_cfg.image_size, model_cfg.image_size)}:
        raise ConfigError(f"parameter {key!r}: frames of {sorted(size)} px; allowed: {model_cfg.image_size}x{model_cfg.image_size}, the model's image_size")
    rates = {m["fps"] for m in metas}
    if rates != {model_cfg.fps}:
        raise ConfigError(f"parameter {key!r}: episodes at {sorted(rates)} fps; allowed: {model_cfg.fps}, the model's fps")
    return ds


def load_model(opts: dict) -> worldmodel.WorldModel:
    device = opts["device"]
    try:
        torch.device(device)
    except RuntimeError:
        raise ConfigError(f"parameter 'device': got {device!r}; allowed: a torch device (cpu, cuda, cuda:1, mps)") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"parameter 'device': got {device!r}; allowed: cpu (no CUDA device is available)")
    try:
        model = worldmodel.load(opts["checkpoint"], device=device, **{knob: opts[knob] for knob in worldmodel.GATE_KNOBS})
    except (ValueError, OSError, RuntimeError, SafetensorError) as err:  # not a checkpoint, or another model's
        first_line = str(err).strip().splitlines()[0]
        raise ConfigError(f"parameter 'checkpoint': {str(opts['checkpoint'])!r} cannot be loaded ({first_line}); allowed: a file written by WorldModel.save") from None
    return model


# --- rolling out and scoring one episode ----------------------------------------------------------


def shuffled_captions(metas: list[dict], seed: int) -> dict[int, str]:
    """{episode position: another episode's caption of the same family} (a random derangement within
    each family); families with a single episode are left out."""
    rng = np.random.default_rng(seed)
    out: dict[int, str] = {}
    for scene in sorted({m["scene"] for m in metas}):
        members = [i for i, m in enumerate(metas) if m["scene"] == scene]
        if len(members) < 2:
            continue
        order = [members[j] for j in rng.permutation(len(members))]  # a random cycle through the family
        for a, b in zip(order, order[1:] + order[:1]):
            out[a] = metas[b]["caption"]
    return out


def model_predictions(model, episode: Episode, opts: dict) -> list[Episode]:
    with torch.no_grad():
        rollouts = model.rollout(
            episode, context=opts["context"], horizon=opts["horizon"], samples=opts["samples"], temperature=float(opts["temperature"]), seed=opts["seed"]
        )
    return [r.episode for r in rollouts]


def score_episode(true: Episode, predictions: dict[str, list[Episode]], context: int, bodies: int) -> dict:
    """Per-episode figures of every predictor (a list of sampled predictions each) against `true`.

    Curves are averaged over a predictor's samples; events are kept per sample."""
    record = {
        "family": true.scene,
        "bodies": bodies,
        "n_bodies": len(true.body_names),
        "true_events": metrics.detect_events(true, context, bodies),
        "position": {},
        "velocity": {},
        "events": {},
        "psnr": {},
        "ssim": {},
        "frame_px": {},
    }
    colours = metrics.body_colours(true, context, bodies)
    record["frame_px"][FLOOR] = metrics.frame_position_error(true.frames, true, context, colours)  # (H, b)
    for name, preds in predictions.items():
        record["position"][name] = np.mean([metrics.position_error(p, true, context, bodies) for p in preds], axis=0)
        record["velocity"][name] = np.mean([metrics.velocity_error(p, true, context, bodies) for p in preds], axis=0)
        record["events"][name] = [metrics.detect_events(p, context, bodies) for p in preds]
        if name in FRAME_PREDICTORS:
            record["psnr"][name] = np.mean([metrics.psnr(p.frames[context:], true.frames[context:]) for p in preds], axis=0)
            record["ssim"][name] = np.mean([metrics.ssim(p.frames[context:], true.frames[context:]) for p in preds], axis=0)
        if name == MODEL:
            record["frame_px"][name] = np.concatenate([metrics.frame_position_error(p.frames, true, context, colours) for p in preds], axis=1)
    return record


def evaluate_dataset(model, ds: SimDataset, opts: dict, *, ablation: bool, video_positions: set[int], bar) -> tuple[list[dict], dict]:
    """Records of every evaluated episode, and {position: (predicted, simulated) frames} for videos."""
    metas = ds.episodes[: opts["max_episodes"]]
    context, T = opts["context"], opts["context"] + opts["horizon"]
    shuffled = shuffled_captions(metas, opts["seed"]) if ablation else {}
    records, clips = [], {}
    for i in range(len(metas)):
        true = ds.clip(i, 0, T)
        bodies = min(len(true.body_names), model.cfg.n_max_objects)
        predictions = {MODEL: model_predictions(model, true, opts)}
        predictions |= {name: [baseline(true, context, opts["horizon"])] for name, baseline in BASELINES.items()}
        if ablation:
            predictions[REMOVED] = model_predictions(model, replace(true, caption=""), opts)
            if i in shuffled:
                predictions[SHUFFLED] = model_predictions(model, replace(true, caption=shuffled[i]), opts)
        record = score_episode(true, predictions, context, bodies)
        record["episode"] = i
        record["expert_use"] = expert_use(model, true)
        records.append(record)
        if i in video_positions:
            clips[i] = (predictions[MODEL][0].frames, true.frames)
        bar.update(1)
    return records, clips


def expert_use(model, episode: Episode) -> np.ndarray:
    """(n_modalities, n_expert): the share of each modality's routed (token, slot) pairs that each
    expert takes, mean over layers, in a teacher-forced pass over the episode (NaN rows for the
    modalities the episode lacks)."""
    with torch.no_grad():
        out = model(worldmodel.collate([episode], model.cfg).to(model.device))
    usage = worldmodel.expert_usage(out["routing"], out["token_types"], model.cfg.n_expert, out["token_valid"]).mean(0)
    present = torch.bincount(out["token_types"], minlength=usage.shape[0]) > 0
    return torch.where(present[:, None], usage, torch.nan).cpu().numpy()


def summarise_expert_use(records: list[dict]) -> dict:
    """{"by_family": {family: {modality: [share per expert]}}, "overall": {...}}: the model's own
    account of which experts each modality and each scene family used."""

    def table(rows: list[np.ndarray]) -> dict:
        with warnings.catch_warnings():  # modalities absent from every row stay NaN and are left out
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack(rows), axis=0)  # (n_modalities, n_expert)
        return {m: [round(float(v), 4) for v in mean[i]] for i, m in enumerate(worldmodel.MODALITIES) if np.isfinite(mean[i]).all()}

    families = sorted({r["family"] for r in records})
    return {
        "by_family": {f: table([r["expert_use"] for r in records if r["family"] == f]) for f in families},
        "overall": table([r["expert_use"] for r in records]),
    }


def video_positions(metas: list[dict], count: int) -> set[int]:
    """`count` episode positions, one per family first (in dataset order), then the next ones."""
    firsts = list({m["scene"]: i for i, m in reversed(list(enumerate(metas)))}.values())
    ordered = sorted(firsts) + [i for i in range(len(metas)) if i not in firsts]
    return set(ordered[:count])


# --- aggregation ----------------------------------------------------------------------------------


def _number(x) -> float | None:
    """A JSON-safe float: None for NaN."""
    x = float(x)
    return None if np.isnan(x) else x


def _curve_summary(curves: list[np.ndarray]) -> dict:
    mean_curve = np.mean(curves, axis=0)  # (H,)
    return {"mean": _number(mean_curve.mean()), "final": _number(mean_curve[-1]), "curve": [_number(v) for v in mean_curve]}


def _event_summary(records: list[dict], event: str, predictors: list[str], fps: float) -> dict:
    """Accuracy of each predictor's event flag against the simulator's, and its timing error (s)
    where both say the event happened."""
    truth = [r["true_events"][event] for r in records]
    out = {"episodes": len(records), "occurred": sum(t is not None for t in truth)}
    for name in predictors:
        hits, delays = [], []
        for r, t in zip(records, truth):
            for sample in r["events"][name]:
                p = sample[event]
                hits.append((p is None) == (t is None))
                if p is not None and t is not None:
                    delays.append(abs(p - t) / fps)
        out[name] = {"accuracy": _number(np.mean(hits)), "timing_error_s": _number(np.mean(delays)) if delays else None}
    return out


def summarise(records: list[dict], fps: float) -> dict:
    """Figures over a group of episode records (a family, or all), for the predictors every record has."""
    predictors = [name for name in records[0]["position"] if all(name in r["position"] for r in records)]
    frame_names = [name for name in FRAME_PREDICTORS if name in predictors]
    families = {r["family"] for r in records}
    summary = {
        "episodes": len(records),
        "bodies_scored": int(sum(r["bodies"] for r in records)),
        "bodies_not_scored": int(sum(r["n_bodies"] - r["bodies"] for r in records)),
        "position_error_m": {name: _curve_summary([r["position"][name] for r in records]) for name in predictors},
        "velocity_error_m_s": {name: _curve_summary([r["velocity"][name] for r in records]) for name in predictors},
        "psnr_db": {name: _number(np.mean([r["psnr"][name] for r in records])) for name in frame_names},
        "ssim": {name: _number(np.mean([r["ssim"][name] for r in records])) for name in frame_names},
        "frame_position_error_px": {},
        "events": {
            event: _event_summary([r for r in records if r["family"] in fams], event, predictors, fps)
            for event, fams in metrics.EVENT_FAMILIES.items()
            if families & set(fams)
        },
    }
    for name in (MODEL, FLOOR):
        errors = np.concatenate([r["frame_px"][name].ravel() for r in records])  # px, NaN: body not found
        found = ~np.isnan(errors)
        summary["frame_position_error_px"][name] = {
            "mean": _number(errors[found].mean()) if found.any() else None,
            "found": _number(found.mean()),  # fraction of (frame, body) pairs where the parser found the body
        }
    return summary


def summarise_dataset(records: list[dict], fps: float) -> dict:
    families = sorted({r["family"] for r in records})
    return {
        "overall": summarise(records, fps),
        "families": {f: summarise([r for r in records if r["family"] == f], fps) for f in families},
    }


def wins(dataset: dict) -> dict[str, bool]:
    """family -> whether the model's mean position error is below every baseline's."""
    out = {}
    for family, s in dataset["families"].items():
        errors = s["position_error_m"]
        out[family] = all(errors[MODEL]["mean"] < errors[name]["mean"] for name in BASELINES)
    return out


def ood_ratio(id_summary: dict, ood_summary: dict) -> dict:
    """OOD / ID mean model position error, overall and per family present in both."""

    def ratio(a: dict, b: dict) -> float | None:
        x, y = a["position_error_m"][MODEL]["mean"], b["position_error_m"][MODEL]["mean"]
        return None if x is None or y is None or x == 0 else y / x

    common = sorted(set(id_summary["families"]) & set(ood_summary["families"]))
    return {
        "overall": ratio(id_summary["overall"], ood_summary["overall"]),
        "families": {f: ratio(id_summary["families"][f], ood_summary["families"][f]) for f in common},
    }


def caption_ablation(records: list[dict], fps: float) -> dict:
    """The model with its own, shuffled and removed captions, on the episodes of the families where
    events are scored (shuffled: those whose family has another episode to take a caption from)."""
    event_families = {f for fams in metrics.EVENT_FAMILIES.values() for f in fams}
    chosen = [r for r in records if r["family"] in event_families and SHUFFLED in r["position"]]
    out = {"families": sorted({r["family"] for r in chosen}), "episodes": len(chosen)}
    if not chosen:
        return out
    s = summarise(chosen, fps)
    per_family = {f: summarise([r for r in chosen if r["family"] == f], fps) for f in out["families"]}
    for label, name in (("caption", MODEL), ("shuffled", SHUFFLED), ("removed", REMOVED)):
        out[label] = {
            "position_error_m": s["position_error_m"][name]["mean"],
            "velocity_error_m_s": s["velocity_error_m_s"][name]["mean"],
            "events": {event: e[name] for event, e in s["events"].items()},
            "families": {f: {"position_error_m": fs["position_error_m"][name]["mean"]} for f, fs in per_family.items()},
        }
    return out


# --- outputs --------------------------------------------------------------------------------------


def write_json(path: Path, value) -> None:
    """Write atomically (a temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def plot_errors(path: Path, dataset: dict, fps: float) -> None:
    """Position error against horizon time, one panel per family and one for all, model vs baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("all", dataset["overall"])] + list(dataset["families"].items())
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharex=True)
    for ax, (title, s) in zip(axes.flat, panels):
        for name, curve in s["position_error_m"].items():
            if name in PREDICTORS:
                t = np.arange(1, len(curve["curve"]) + 1) / fps
                ax.plot(t, [np.nan if v is None else v for v in curve["curve"]], label=name, lw=2 if name == MODEL else 1)
        ax.set_title(f"{title} ({s['episodes']})", fontsize=9)
        ax.set_xlabel("horizon (s)", fontsize=8)
        ax.set_ylabel("position error (m)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}{path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


VIDEO_SCALE = 4  # pixels per frame pixel in the videos


def write_video(path: Path, predicted: np.ndarray, simulated: np.ndarray, fps: float) -> None:
    """predicted | simulated | |difference| side by side (each (T, H, W, 3) uint8), upscaled."""
    import imageio.v2 as imageio

    difference = np.abs(predicted.astype(np.int16) - simulated.astype(np.int16)).astype(np.uint8)
    gap = np.full((*predicted.shape[:2], 2, 3), 255, np.uint8)  # (T, H, 2, 3) white separator
    tiles = np.concatenate([predicted, gap, simulated, gap, difference], axis=2)
    tiles = tiles.repeat(VIDEO_SCALE, axis=1).repeat(VIDEO_SCALE, axis=2)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}{path.suffix}")
    imageio.mimwrite(tmp, list(tiles), fps=fps, codec="libx264", macro_block_size=8, format="FFMPEG")
    os.replace(tmp, path)


TABLE_LABELS = {MODEL: "model", "copy_last": "copy last", "constant_velocity": "const vel", "constant_acceleration": "const acc"}


def _cell(value: float | None, width: int, spec: str) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def print_table(report: dict) -> None:
    """A human-readable summary on stderr: per dataset and family, the position error of the model and
    the baselines, whether the model wins, PSNR and the frame-parsed error (parser floor, model); then
    event accuracy, the OOD/ID ratio and the caption ablation."""
    names = list(PREDICTORS)
    head = f"{'family':<12}{'eps':>4}" + "".join(f"{TABLE_LABELS[n]:>11}" for n in names) + f"{'win':>5}{'psnr':>7}{'floor px':>9}{'px':>7}"
    for key, dataset in report["datasets"].items():
        print(f"\n[{key}] position error over the horizon, m (mean); PSNR dB; frame-parsed error px", file=sys.stderr)
        print(head, file=sys.stderr)
        rows = list(dataset["families"].items()) + [("all", dataset["overall"])]
        for family, s in rows:
            err, px = s["position_error_m"], s["frame_position_error_px"]
            win = report["wins"].get(family) if key == "id" else None
            print(
                f"{family:<12}{s['episodes']:>4}"
                + "".join(_cell(err[n]["mean"], 11, ".4f") for n in names)
                + f"{'' if win is None else ('yes' if win else 'no'):>5}"
                + _cell(s["psnr_db"].get(MODEL), 7, ".1f")
                + _cell(px[FLOOR]["mean"], 9, ".2f")
                + _cell(px[MODEL]["mean"], 7, ".2f"),
                file=sys.stderr,
            )
        for event, e in dataset["overall"]["events"].items():
            accuracy = ", ".join(f"{TABLE_LABELS[n]} {_cell(e[n]['accuracy'], 4, '.2f').strip()}" for n in names)
            print(f"{event} accuracy ({e['episodes']} episodes, {e['occurred']} with the event): {accuracy}", file=sys.stderr)
    use = report["expert_use"]["overall"]
    print("\nexpert use by modality (share per expert, mean over layers): " + "; ".join(f"{m} {' '.join(f'{v:.2f}' for v in shares)}" for m, shares in use.items()), file=sys.stderr)
    if "ood_id_ratio" in report:
        print(f"\nOOD / ID position error: {_cell(report['ood_id_ratio']['overall'], 0, '.2f')}", file=sys.stderr)
    ablation = report.get("caption_ablation") or {}
    if ablation.get("episodes"):
        figures = ", ".join(f"{k} {ablation[k]['position_error_m']:.4f} m" for k in ("caption", "shuffled", "removed"))
        print(f"caption ablation ({', '.join(ablation['families'])}; position error): {figures}", file=sys.stderr)


# --- the command ----------------------------------------------------------------------------------


def run(cfg: DictConfig) -> dict:
    """Evaluate as `cfg` says; write the report, plots and videos; return the summary."""
    opts = check_options(cfg)
    model = load_model(opts)
    datasets = {"id": open_dataset("data", opts["data"], opts, model.cfg)}
    if opts["ood_data"] is not None:
        datasets["ood"] = open_dataset("ood_data", opts["ood_data"], opts, model.cfg)

    out = opts["out_dir"]
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(exist_ok=True)
    total = sum(len(ds.episodes[: opts["max_episodes"]]) for ds in datasets.values())
    fps = model.cfg.fps
    report = {
        "checkpoint": str(opts["checkpoint"]),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()},
        "model": {"config": model.cfg.to_dict(), "parameters": model.num_parameters()},
        "bodies": f"the first min(n_bodies, n_max_objects = {model.cfg.n_max_objects}) bodies of every episode are scored "
        "(bodies_not_scored counts the others, e.g. pour's beads)",
        "horizon_s": opts["horizon"] / fps,
        "events": {e: list(f) for e, f in metrics.EVENT_FAMILIES.items()},
        "datasets": {},
        "plots": [],
        "videos": [],
    }
    all_records = {}
    with tqdm(total=total, desc="evaluate", unit="episode", disable=not opts["progress"], file=sys.stderr) as bar:
        for key, ds in datasets.items():
            metas = ds.episodes[: opts["max_episodes"]]
            chosen = video_positions(metas, opts["videos"])
            records, clips = evaluate_dataset(model, ds, opts, ablation=opts["caption_ablation"] and key == "id", video_positions=chosen, bar=bar)
            all_records[key] = records
            report["datasets"][key] = {"path": str(ds.path), "manifest_hash": ds.manifest.get("hash"), **summarise_dataset(records, fps)}
            plot = out / "plots" / f"position_error_{key}.png"
            plot_errors(plot, report["datasets"][key], fps)
            report["plots"].append(str(plot))
            for i, (predicted, simulated) in sorted(clips.items()):
                video = out / "videos" / f"{key}-{i:04d}-{metas[i]['scene']}.mp4"
                write_video(video, predicted, simulated, fps)
                report["videos"].append(str(video))

    report["wins"] = wins(report["datasets"]["id"])
    report["expert_use"] = summarise_expert_use(all_records["id"])
    if "ood" in datasets:
        report["ood_id_ratio"] = ood_ratio(report["datasets"]["id"], report["datasets"]["ood"])
    if opts["caption_ablation"]:
        report["caption_ablation"] = caption_ablation(all_records["id"], fps)
    report["provenance"] = {"physfusion": _version(), "torch": torch.__version__}
    report_path = out / "report.json"
    write_json(report_path, report)
    print_table(report)

    overall = report["datasets"]["id"]["overall"]
    return {
        "report": str(report_path),
        "episodes": {k: d["overall"]["episodes"] for k, d in report["datasets"].items()},
        "position_error_m": {name: e["mean"] for name, e in overall["position_error_m"].items() if name in PREDICTORS},
        "wins": f"{sum(report['wins'].values())}/{len(report['wins'])}",
        "ood_id_ratio": report.get("ood_id_ratio", {}).get("overall"),
        "psnr_db": overall["psnr_db"],
        "ssim": overall["ssim"],
        "plots": len(report["plots"]),
        "videos": len(report["videos"]),
    }


def _version() -> str:
    try:
        return importlib.metadata.version("physfusion")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@hydra.main(config_path="pkg://configs", config_name="evaluate", version_base="1.3")
def _app(cfg: DictConfig) -> dict:
    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"physfusion-evaluate: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
