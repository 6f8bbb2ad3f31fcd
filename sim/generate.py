"""`physfusion-generate`: scene families -> a sharded, resumable zarr dataset (a Hydra app).

    physfusion-generate scene=drop num_episodes=1000 out_dir=data/drop seed=0 workers=2
    physfusion-generate scene=all params.restitution=0.5 split=ood width=96 height=96
    physfusion-generate launcher=ray workers=8
    physfusion-generate -m launcher=slurm num_tasks=32 scene=all num_episodes=100000 out_dir=/shared/all

Options: configs/generate.yaml; on-disk schema: sim/dataset.py. A progress bar goes to stderr; the
last stdout line is a JSON summary (episodes, frames, frames_per_s, rejected, bytes_on_disk, out_dir,
preview, ...). Bad input exits with status 2 and a one-line message, before anything is written.
"""

from __future__ import annotations

import json
import sys

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from sim.dataset import DatasetError, DatasetSpec, generate
from sim.params import ParamError
from sim.render import RenderError

SPEC_KEYS = [f for f in DatasetSpec.__dataclass_fields__]


def run(cfg: DictConfig) -> dict:
    """Generate the dataset `cfg` describes; return the summary."""
    options = OmegaConf.to_container(cfg, resolve=True)
    spec = DatasetSpec.from_dict({k: options[k] for k in SPEC_KEYS if k in options})
    launcher = options.get("launcher") or {}
    return generate(
        spec,
        to_absolute_path(str(options["out_dir"])),  # relative to where the command was run
        workers=options["workers"],
        launcher=launcher.get("name", "local"),
        ray_address=launcher.get("address"),
        task=options.get("task"),
        num_tasks=options.get("num_tasks", 1),
        preview_episodes=options.get("preview_episodes", 4),
        progress=bool(options.get("progress", True)),
    )


@hydra.main(config_path="pkg://configs", config_name="generate", version_base="1.3")
def _app(cfg: DictConfig) -> dict:
    try:
        summary = run(cfg)
    except (ParamError, DatasetError, RenderError) as err:
        print(f"physfusion-generate: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary), flush=True)
    return summary


def main() -> None:
    # `params.NAME=value` and `params={NAME:value,...}` add keys to the (empty) `params` mapping, which
    # Hydra spells `++params...`; accept the plain form too.
    sys.argv[1:] = [f"++{a}" if a.startswith(("params.", "params=")) else a for a in sys.argv[1:]]
    _app()


if __name__ == "__main__":
    main()
