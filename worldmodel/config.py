"""`ModelConfig`: every hyperparameter of the world model, and the size presets nano / mini / base.

    from worldmodel.config import preset
    cfg = preset("nano")                     # a ModelConfig
    cfg = preset("nano", n_layer=2)          # with overrides

Token geometry (defaults, 64x64 video at 20 fps, 2x8x8 tubelets): a clip of T frames becomes
ceil(T / 2) time blocks of 1 separator + 2 audio + 2 action + 2 state + 64 video tokens, after the
caption's byte tokens (BOS, bytes, EOT).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

# token modality types (the index of `type_emb`; MoE routing can be biased by these)
TEXT, VIDEO, AUDIO, ACTION, SEP, STATE = 0, 1, 2, 3, 4, 5
MODALITIES = ("text", "video", "audio", "action", "sep", "state")
GATE_KNOBS = {
    "gate_override": "step units",
    "override_reach": "m; inf: everywhere",
    "free_flight_tolerance": "a fraction of one frame's g dt; 0: never",
    "free_swing": "> 0: on; 0: never",
    "floor_support": "> 0: on; 0: never",
    "floor_steady": "> 0: on; 0: never",
    "fall_steady": "> 0: on; 0: never",
    "accel_tolerance": "m/s per frame; inf: none released",
    "release_reach": "m; inf: anywhere",
}
"""the dynamics gate's knobs (`ModelConfig` fields, each >= 0, with its unit): they change no weight,
so `worldmodel.load`, `physfusion-evaluate` and `physfusion-rlpf` may set them on a trained checkpoint"""


def knob_error(knobs: dict) -> str | None:
    """The message naming the first of knobs (a `GATE_KNOBS` name -> a value, or None: the
    checkpoint's) whose value is not a number >= 0; None when every one is fine."""
    for key, v in knobs.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            return f"parameter {key!r}: got {v!r}; allowed: null (the checkpoint's) or a number >= 0 ({GATE_KNOBS[key]})"
    return None


@dataclass(frozen=True)
class ModelConfig:
    # --- data geometry -------------------------------------------------------------------------
    image_size: int = 64
    """frame height = width in pixels; frames must be exactly this size"""
    patch: int = 8
    """tubelet side in pixels (image_size % patch == 0)"""
    tubelet_t: int = 2
    """frames per tubelet = frames per time block; a clip's T need not be a multiple (padded)"""
    fps: float = 20.0
    """frame rate the model is trained at; episodes at another rate are refused"""
    audio_rate: int = 16000
    """audio sample rate in Hz (`Episode.audio_rate`)"""
    audio_bins: int = 16
    """an audio token is the log-RMS envelope of one frame's samples in this many bins; 0 = no audio tokens"""
    action_dim: int = 8
    """action tokens take the first `action_dim` action channels (zero-padded); 0 = no action tokens"""
    max_text_len: int = 512
    """caption bytes beyond max_text_len - 2 are cut (BOS and EOT take two)"""
    n_max_objects: int = 8
    """tracked bodies: bodies 0..n_max_objects-1 of an episode (the rest are not modelled)"""
    state_tokens: bool = True
    """one state token per frame (the tracked bodies' positions and velocities): the context's
    known states go in, the model's own predictions are fed back during a rollout"""

    # --- transformer -----------------------------------------------------------------------------
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.0
    attn_chunks: int = 4
    """training attention is computed in this many query chunks (the text and groups of time blocks),
    each over only the keys it may see (`worldmodel.model.ChunkedMask`); 1 = one masked attention"""
    rope_theta: float = 10000.0

    # --- mixture of experts feed-forward -------------------------------------------------------
    n_expert: int = 4
    top_k: int = 2
    expert_hidden: int = 0
    """hidden width of one expert; 0 = 4 * d_model // top_k (active compute of a dense 4x MLP)"""
    modality_routing: bool = True
    """add a learned (modality, expert) bias to the router logits"""
    moe_aux_weight: float = 0.01
    """weight of the Switch/GShard load-balancing loss in `loss`"""

    # --- heads ---------------------------------------------------------------------------------
    residual_frame: bool = True
    """predicted patch mean = last frame of the current tubelet + a learned delta"""
    frame_delta_scale: float = 0.03
    """the head's mean output is multiplied by this: pixels need ~1/255 precision, and without it
    Adam's first sign-like steps on the zero-initialised head throw every pixel off by ~20 levels
    (measured: 50 steps of one-clip overfitting reach 0.64 nats/value with 0.03, 1.5 with 0.1, 1.8 with 1)"""
    logstd_min: float = -7.0
    logstd_max: float = 1.0
    """per-pixel log-std in [0, 1] pixel units is soft-clamped to [logstd_min, logstd_max]; it starts
    at their midpoint (std 0.05); exp(-7) = 0.23 uint8 levels lets a known pixel cost ~0.03 nats"""
    state_weight: float = 1.0
    pos_scale: float = 1.0
    """m; positions are divided by this for the state loss"""
    vel_scale: float = 3.0
    """m/s; velocities are divided by this for the state loss"""
    step_pos_scale: float = 0.02
    step_vel_scale: float = 0.5
    """m, m/s: the dynamics head predicts each frame's state as a step from the previous one,
    p' = p + v dt + step_pos_scale * r_p, v' = v + step_vel_scale * r_v; r is what it outputs"""
    chain_weight: float = 0.1
    """weight of the chained-state loss (the dynamics head stepping from its own predictions over
    the clip, as in a rollout) within the state loss"""
    step_nll_weight: float = 0.1
    """weight of the dynamics steps' Gaussian NLL (it trains their log-std only) within the state loss"""
    sim_timestep: float = 0.001
    """s; the simulator's own step (semi-implicit Euler, `sim.contact.TIMESTEP`): under a constant
    acceleration a a body moves a dt^2 (1 + sim_timestep / dt) / 2 in one frame of dt, which the
    dynamics head's constant-acceleration prior uses (pour's 2 ms steps are not matched); 0 = the
    exact parabola a dt^2 / 2"""
    rest_tolerance: float = 0.02
    """step units: a body whose true step is within this of the prior's in every component is
    labelled `keep` (at rest, coasting or in free flight) for the dynamics head's gate"""
    gate_override: float = 0.1
    """step units: a learnt correction larger than this in any component overrides the gate's keep,
    so a gate that misses an impact (a bounce, a hit) cannot carry a body through the floor or
    another body; the gate then removes only the small corrections that drift resting bodies"""
    override_reach: float = 0.05
    """m: the gate_override acts only on a body that comes within this of a contact during its
    block (`WorldModel.within_reach`: another tracked body's sphere, or the floor while it falls);
    elsewhere nothing the model tracks can hit it, and the gate's keep is final (coasting, rolling
    or sliding at a steady pace, in free flight). inf: the override acts everywhere. 0.05 (the
    contact_scale) keeps stacked cubes, whose learnt spheres need not touch, within reach"""
    free_flight_tolerance: float = 0.05
    """fraction of gravity's velocity change over one frame: a free body (neither driven nor
    tethered) whose steady velocity change is at least gravity's downwards, less this, or which
    rises (faster than 5 cm/s), and which is out of `override_reach` of every contact, is in free
    flight (nothing below it holds it up, nothing but a contact lifts it, so nothing presses on it
    and no friction acts): it is held on gravity's step alone whatever the gate says
    (`WorldModel.in_free_flight`), where out of the training ranges the learnt corrections bend it
    back towards them (a faster launch, a higher drop) and off a bounce the prior would carry it up
    at a steady pace. 0: never held"""
    free_swing: float = 1.0
    """> 0: a tethered body that gravity swings (nothing drives it) and that is out of
    `override_reach` of every contact steps on the closed-form swing alone (`gravity_swing`: its
    hinge, gravity, the bobs' masses and the hinges' damping), whatever the gate and the head's
    correction say (`WorldModel.block_dynamics`): nothing else acts on it there, and out of the
    training ranges (a wider swing) the learnt corrections bend it back towards them. 0: never
    (the gate's step, as any other body's)"""
    floor_support: float = 0.0
    """> 0: the floor holds up and only slows the free bodies (neither driven nor tethered): one
    that would end a frame below its radius is put back on the floor, its downward velocity taken
    away, and one sliding or standing on it that no other tracked body comes within
    `override_reach` of takes a step that never speeds its horizontal velocity up or turns it back
    (friction's; a hit's and a landing's closed-form steps are added unlimited), whatever the head
    says (`WorldModel.advance`); and a body falling faster than g dt lands under gravity in the
    closed-form bounce (`WorldModel.contact_impulse`). Off a landing the learnt step sank bodies
    into the floor and sped resting ones up sideways, which the constant-acceleration prior then
    carried on. The steps it may have set are left out of the steps' log-density
    (`WorldModel.set_by_floor`), so RL fine-tuning runs with it. 0 (the default): never. Off by
    default because it raises ramp's and projectile's evaluation errors; one RL run with it
    collapsed after about 120 steps, another with an adaptive KL weight did not (benchmarks/HISTORY.md)"""
    floor_steady: float = 1.0
    """> 0: the steady velocity change the prior carries on (`constant_acceleration_prior`) is, for
    a free body on the floor that no other tracked body is within `override_reach` of, at most
    what friction does: it slows the body's horizontal velocity, never speeds it up or turns it
    (`WorldModel.steady_on_floor`). Without it a sideways change left on a resting body carried on
    every frame, and dropped bodies slid off their landing place ever faster. It acts on the
    head's features as well as its prior, in training and rollouts alike. 0: off (before it)"""
    fall_steady: float = 0.0
    """> 0: for a free body above the floor that no other tracked body is within `override_reach`
    of, a steady velocity change pointing down by more than FALL_ONSET of a frame of gravity and
    closer to vertical than FALL_SLOPE (a slope's is not) is gravity's, (0, 0, -g dt): nothing the
    model tracks holds such a body up (`WorldModel.steady_in_fall`). Without it the head's steps
    ease into a fall over several frames, and the prior carried on a part of gravity (table_fall's
    cups fell off the edge slower than g: an ad-hoc look, no figures kept) with the table's friction. It acts on the
    head's features as well as its prior. 0 (the default): off"""
    accel_tolerance: float = 0.002
    """m/s per frame: the gate never keeps the prior's step for a body whose steady velocity change
    exceeds this (it accelerates) while it is within `override_reach` of a contact or within
    `release_reach` of another tracked body: the head's step (prior plus correction) is taken. The
    prior carries an acceleration on unchanged, right for a constant force but not for one that
    contacts exert while their geometry changes: a block tipping off the one below accelerates
    sideways and down more every frame, and the gate turned back each of the head's corrections,
    small at first, so the prior kept it tipping slowly and sliding ever faster
    (benchmarks/HISTORY.md). At rest or coasting (steady change 0) the gate still keeps it. inf: none released"""
    release_reach: float = 0.1
    """m: how near another tracked body's sphere (the gap less what their closing speed covers in
    a block) an accelerating body is released from the gate's keep (`accel_tolerance`); a block
    that tips off a tower leaves its neighbours' learnt spheres by more than `override_reach` while
    it still falls away from them. Other bodies only: a slope or a table the model does not track
    holds a sliding body at a steady acceleration the prior has right. inf: anywhere"""
    gate_weight: float = 0.1
    """weight of the gate's binary cross-entropy (keep the prior's step or move) within the state loss"""
    body_weight: float = 0.1
    """weight of the body properties' loss within the state loss: the learnt radius (in contact_scale
    units), log mass and restitution against the simulator's, where the episode states them
    (`sim.body_properties`). 0: they learn through the contact impulses alone (benchmarks/HISTORY.md:
    the `toi` and `pointer` runs)"""
    driven_weight: float = 1.0
    """weight of the binary cross-entropy of each body's driven logit against `sim.driven_bodies`
    within the state loss (`WorldModel.driven_loss`)"""
    pointer_weight: float = 1.0
    """weight of the caption pointer's loss within the state loss (`WorldModel.pointer_loss`): it
    teaches each body and property which caption number states it, where the episode states it"""
    contact_scale: float = 0.05
    """m; the dynamics head's contact features (gaps to the nearest body and to the floor after one
    step, `WorldModel.contact_features`) are divided by this: within a few of it, a hit is imminent"""

    # --- derived ---------------------------------------------------------------------------------
    @property
    def grid(self) -> int:
        """patches per image side"""
        return self.image_size // self.patch

    @property
    def n_patches(self) -> int:
        """video tokens per time block"""
        return self.grid**2

    @property
    def tubelet_dim(self) -> int:
        """values in one tubelet: tubelet_t * patch * patch * 3"""
        return self.tubelet_t * self.patch * self.patch * 3

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.audio_rate / self.fps))

    @property
    def n_audio(self) -> int:
        """audio tokens per block (one per frame)"""
        return self.tubelet_t if self.audio_bins > 0 else 0

    @property
    def n_action(self) -> int:
        """action tokens per block (one per frame)"""
        return self.tubelet_t if self.action_dim > 0 else 0

    @property
    def n_state(self) -> int:
        """state tokens per block (one per frame)"""
        return self.tubelet_t if self.state_tokens else 0

    @property
    def block_len(self) -> int:
        """tokens per time block: separator, audio, action, state, video"""
        return 1 + self.n_audio + self.n_action + self.n_state + self.n_patches

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def expert_width(self) -> int:
        return self.expert_hidden or 4 * self.d_model // self.top_k

    @property
    def rope_sections(self) -> tuple[int, int, int]:
        """rotary frequency pairs for (time, row, column); they sum to head_dim / 2"""
        pairs = self.head_dim // 2
        row = pairs // 4
        return pairs - 2 * row, row, row

    def __post_init__(self):
        def bad(name, allowed):
            raise ValueError(f"ModelConfig.{name}: got {getattr(self, name)!r}; allowed: {allowed}")

        for name in ("image_size", "patch", "tubelet_t", "d_model", "n_layer", "n_head", "n_expert", "top_k", "max_text_len", "n_max_objects", "attn_chunks"):
            if int(getattr(self, name)) < 1:
                bad(name, "an integer >= 1")
        if self.image_size % self.patch:
            bad("patch", f"a divisor of image_size={self.image_size}")
        if self.d_model % self.n_head:
            bad("n_head", f"a divisor of d_model={self.d_model}")
        if self.head_dim % 2 or self.head_dim < 8:
            bad("n_head", f"one giving an even head_dim >= 8 (d_model={self.d_model})")
        if not 1 <= self.top_k <= self.n_expert:
            bad("top_k", f"1..n_expert={self.n_expert}")
        if self.max_text_len < 3:
            bad("max_text_len", ">= 3")
        if self.audio_bins < 0:
            bad("audio_bins", ">= 0")
        if self.audio_bins and (abs(self.audio_rate / self.fps - self.samples_per_frame) > 1e-6 or self.samples_per_frame % self.audio_bins):
            bad("audio_bins", f"a divisor of audio_rate / fps = {self.audio_rate / self.fps} (which must be an integer)")
        if self.action_dim < 0:
            bad("action_dim", ">= 0")
        if not 0.0 <= self.dropout < 1.0:
            bad("dropout", "[0, 1)")
        if not self.logstd_min < self.logstd_max:
            bad("logstd_min", f"< logstd_max={self.logstd_max}")
        if not 0.0 <= self.sim_timestep < 1.0 / self.fps:
            bad("sim_timestep", f"[0, 1 / fps = {1.0 / self.fps:g}) s")
        if self.rest_tolerance < 0:
            bad("rest_tolerance", ">= 0 (step units)")
        for name, unit in GATE_KNOBS.items():
            if not getattr(self, name) >= 0:
                bad(name, f">= 0 ({unit})")
        if self.gate_weight < 0:
            bad("gate_weight", ">= 0")
        if self.body_weight < 0:
            bad("body_weight", ">= 0")
        if self.driven_weight < 0:
            bad("driven_weight", ">= 0")
        if self.pointer_weight < 0:
            bad("pointer_weight", ">= 0")
        if not self.contact_scale > 0:
            bad("contact_scale", "> 0 (m)")

    # --- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**d)


PRESETS: dict[str, ModelConfig] = {
    # trains in minutes on 2 CPU cores: 2x16x16 tubelets (601 tokens per 34-frame clip instead of
    # 1417 with 8x8 patches; benchmarks/train_throughput.py --patch 8 times the other)
    "nano": ModelConfig(d_model=128, n_layer=4, n_head=4, n_expert=4, top_k=2, patch=16),
    # a few hours on CPU, minutes on a GPU
    "mini": ModelConfig(d_model=256, n_layer=6, n_head=8, n_expert=8, top_k=2),
    # for a GPU
    "base": ModelConfig(d_model=512, n_layer=12, n_head=8, n_expert=8, top_k=2),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The preset `name` (nano, mini, base) with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"model preset: got {name!r}; allowed: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
