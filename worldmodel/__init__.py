"""physfusion.worldmodel: a block-causal multimodal-MoE transformer over unified tokens that rolls
physics videos forward frame by frame.

    import worldmodel
    model = worldmodel.WorldModel(worldmodel.preset("nano"))
    print(model.describe())                                   # true parameter count
    out = model(worldmodel.collate(clips, model.cfg))         # dict(loss, frame_nll, state_loss, moe_aux, ...)
    rollouts = model.rollout(episode, context=4, horizon=16, samples=4, temperature=1.0)
    rollouts[0].episode                                       # sim.Episode with predicted frames and states
    rollouts[0].logprob                                       # differentiable log-probability
    model.save("runs/nano/model.safetensors"); model = worldmodel.load("runs/nano/model.safetensors")

Commands: `physfusion-train` (worldmodel.train) and `physfusion-evaluate` (worldmodel.evaluate, with
worldmodel.metrics and worldmodel.baselines).
"""

from worldmodel.config import GATE_KNOBS, MODALITIES, PRESETS, ModelConfig, preset
from worldmodel.model import KVCache, WorldModel, baseline_encoder, discretized_gaussian_logprob, load
from worldmodel.moe import expert_usage, load_balancing_loss
from worldmodel.rollout import Rollout
from worldmodel.tokens import Batch, collate, decode_text, encode_text, frames_to_tubelets, tubelets_to_frames

__all__ = [
    "GATE_KNOBS",
    "MODALITIES",
    "PRESETS",
    "Batch",
    "KVCache",
    "ModelConfig",
    "Rollout",
    "WorldModel",
    "baseline_encoder",
    "collate",
    "decode_text",
    "discretized_gaussian_logprob",
    "encode_text",
    "expert_usage",
    "frames_to_tubelets",
    "load",
    "load_balancing_loss",
    "preset",
    "tubelets_to_frames",
]
