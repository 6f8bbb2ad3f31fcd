"""`physfusion-verify`: a physical question -> answer, verdict, checks, simulator answer and a
side-by-side video (a Hydra app; options in configs/verify.yaml).

    physfusion-verify query="A ball is dropped from 2 m. When does it land?" out_dir=verify/drop
    physfusion-verify query="..." checkpoint=runs/nano/model.safetensors samples=8 max_rethinks=2
    physfusion-verify query_file=queries.jsonl out_dir=verify/batch

Writes out_dir/report.json and out_dir/video.mp4 (batch: out_dir/NNNN/ per query and
out_dir/reports.jsonl). Progress goes to stderr; the last stdout line is the report as JSON (batch:
a summary). Bad input exits with status 2 and a one-line message naming the parameter, the value
and what is allowed.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from sim.engine import UnstableSimulation
from sim.params import ParamError
from verifier.answer import AnswerError
from verifier.loop import verify
from verifier.query import QueryError, load_mapping, read_batch
from verifier.video import write_video


# bad input, or a scene whose simulation cannot show the answer (the message says which): exit 2
ANSWER_ERRORS = (QueryError, ParamError, AnswerError, UnstableSimulation)


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def load_queries(options: dict) -> tuple[list, bool]:
    """(the queries, whether they came as a batch file)."""
    query, path = options.get("query"), options.get("query_file")
    if (query is None) == (path is None):
        raise QueryError(f"parameters 'query' and 'query_file': got {query!r} and {path!r}; allowed: exactly one of them")
    if query is not None:
        return [query if isinstance(query, (str, dict)) else str(query)], False
    file = Path(to_absolute_path(str(path)))
    if not file.is_file():
        raise QueryError(f"parameter 'query_file': got {str(path)!r}; allowed: an existing .jsonl, .json or .yaml file")
    if file.suffix == ".jsonl":
        return read_batch(str(file)), True
    return [load_mapping(file.read_text())], False


def load_model(checkpoint, device: str):
    if checkpoint is None:
        return None
    path = Path(to_absolute_path(str(checkpoint)))
    if not path.is_file():
        raise QueryError(f"parameter 'checkpoint': got {str(checkpoint)!r}; allowed: an existing checkpoint file")
    import worldmodel

    return worldmodel.load(path, device=device)


def answer_one(query, model, options: dict, out: Path) -> dict:
    say = (lambda m: print(f"physfusion-verify: {m}", file=sys.stderr, flush=True)) if options["progress"] else None
    result = verify(query, model, oracle=options["oracle"], samples=options["samples"],
                    max_rethinks=options["max_rethinks"], context=options["context"],
                    temperature=options["temperature"], tolerance=options["tolerance"],
                    seed=options["seed"], progress=say)
    out.mkdir(parents=True, exist_ok=True)  # only once the query is understood
    if options["video"]:
        result.video = write_video(out / "video.mp4", result.predicted, result.simulated)
    report = result.to_dict()
    write_json_atomic(out / "report.json", report)
    return report


def run(cfg: DictConfig) -> dict:
    options = OmegaConf.to_container(cfg, resolve=True)
    queries, batch = load_queries(options)
    model = load_model(options.get("checkpoint"), options.get("device", "cpu"))
    out = Path(to_absolute_path(str(options["out_dir"])))  # relative to where the command was run
    if not batch:
        return answer_one(queries[0], model, options, out)
    reports = []
    for i, query in enumerate(queries):
        try:
            reports.append(answer_one(query, model, options, out / f"{i:04d}"))
        except ANSWER_ERRORS as err:  # one bad line does not stop a batch
            reports.append({"query": query, "error": str(err), "verdict": "error"})
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".reports.jsonl.{uuid.uuid4().hex}"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in reports))
    os.replace(tmp, out / "reports.jsonl")
    verdicts: dict[str, int] = {}
    for r in reports:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    return {"queries": len(reports), "verdicts": verdicts, "reports": str(out / "reports.jsonl"), "out_dir": str(out)}


@hydra.main(config_path="pkg://configs", config_name="verify", version_base="1.3")
def _app(cfg: DictConfig) -> dict:
    try:
        summary = run(cfg)
    except ANSWER_ERRORS as err:
        print(f"physfusion-verify: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        sys.exit(2)
    print(json.dumps(summary), flush=True)
    return summary


def quote_query(arg: str) -> str:
    """`query=<free text>` -> a quoted Hydra string, so that commas, colons and braces in English or
    JSON reach parse_query unchanged."""
    key, _, value = arg.partition("=")
    if key.lstrip("+") not in ("query", "query_file") or (len(value) > 1 and value[0] == value[-1] and value[0] in "'\""):
        return arg
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main() -> None:
    sys.argv[1:] = [quote_query(a) for a in sys.argv[1:]]
    _app()


if __name__ == "__main__":
    main()
