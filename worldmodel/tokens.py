"""UniToken: video, caption, audio and actions as one token sequence in one d_model space.

Sequence of one clip of T frames, tt = tubelet_t, nb = ceil(T / tt) time blocks:

    [BOS, caption bytes..., EOT, PAD...]                   text, Lt tokens, block id -1
    block b = 0 .. nb-1:                                  cfg.block_len tokens, block id b
      [SEP]                                               block separator
      [audio of frames b*tt .. b*tt+tt-1]                 log-RMS envelope of each frame's samples
      [action a_f, f = (b+1)*tt-1 .. (b+2)*tt-2]           the actions that drive block b+1's frames
      [state of frames b*tt .. b*tt+tt-1]                 tracked bodies' positions and velocities
      [tubelet (b, r, c) for r, c in grid]               tt x patch x patch x 3 pixels each

Attention is block-causal: a token of block b sees every text token and blocks <= b
(`block_causal_mask`). Positions are 3-D rotary (time, row, column; M-RoPE style): text token i
sits at (i, i, i), a block token at (max_text_len + frame, row, col) with row = col = 0 for the
non-video tokens, so a video token's relation to its own block does not depend on absolute time.

A clip whose T is not a multiple of tt is padded by repeating its last frame; `frame_mask` marks
the real frames. Audio of unknown frames (padding, or frames still being predicted) is replaced
by a learned "absent" embedding; so are the states of a clip trained or rolled out without them
(`Batch.state_present`), which makes the model read the bodies' motion from pixels alone.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn as nn
from einops import rearrange

from sim.bodies import body_properties, driven_bodies, roll_shares
from worldmodel.config import ACTION, AUDIO, MODALITIES, SEP, STATE, TEXT, VIDEO, ModelConfig

PAD, BOS, EOT = 256, 257, 258
TEXT_VOCAB = 259  # 256 byte values + PAD, BOS, EOT
AUDIO_FLOOR = 1e-4  # RMS below this reads as silence


# ----------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------
def encode_text(caption: str, max_len: int) -> list[int]:
    """caption -> [BOS, utf-8 bytes (cut to max_len - 2), EOT]"""
    return [BOS, *caption.encode("utf-8")[: max_len - 2], EOT]


def decode_text(tokens: Sequence[int]) -> str:
    return bytes(int(t) for t in tokens if int(t) < 256).decode("utf-8", errors="replace")


NUMBER = re.compile(rb"[-+]?\d+(?:\.\d+)?")  # a numeric literal in a caption: 1.64, +0.93, -4, 27
NUMBER_FEATURES = 16  # see `number_features`
SHAPE_WORD = re.compile(rb"(?i)\b(?:spheres?|balls?|box(?:es)?|cubes?|cylinders?|capsules?|bobs?|blocks?|beads?|cups?|paddles?|gears?)\b")  # a body's shape noun in a caption


def text_values(tokens: np.ndarray) -> np.ndarray:
    """(..., Lt) caption tokens -> (..., Lt) float32: at each byte of a numeric literal the literal's
    value, NaN elsewhere. The bytes stay tokens; the value rides along (`number_features`), so the
    model reads "restitution 0.35" as a quantity instead of having to learn arithmetic on digits."""
    tokens = np.asarray(tokens)
    values = np.full(tokens.shape, np.nan, np.float32)
    for index in np.ndindex(tokens.shape[:-1]):
        raw = np.where(tokens[index] < 256, tokens[index], 0).astype(np.uint8).tobytes()  # specials become NUL: never part of a number
        for m in NUMBER.finditer(raw):
            values[index][m.start() : m.end()] = float(m.group())
    return values


def shape_words(tokens: np.ndarray) -> np.ndarray:
    """(..., Lt) caption tokens -> (..., Lt) bool: the last byte of each noun that names a body's
    shape (SHAPE_WORD: "a red box", "Balls (3)", "bobs"), where the bodies' roll shares are read
    (`WorldModel.read_bodies`), as the numbers' values are marked by `text_values`."""
    tokens = np.asarray(tokens)
    marks = np.zeros(tokens.shape, bool)
    for index in np.ndindex(tokens.shape[:-1]):
        raw = np.where(tokens[index] < 256, tokens[index], 0).astype(np.uint8).tobytes()  # specials become NUL: never part of a word
        for m in SHAPE_WORD.finditer(raw):
            marks[index][m.end() - 1] = True
    return marks


def number_features(values: torch.Tensor) -> torch.Tensor:
    """(...,) float values (NaN: not a number) -> (..., NUMBER_FEATURES): sign, log10 magnitude and
    sines and cosines of it at six octaves (a 1% difference still moves the finest pair), tanh of the
    value; zeros where NaN."""
    known = ~torch.isnan(values)
    v = torch.where(known, values, torch.zeros_like(values))
    log = torch.log10(v.abs() + 1e-3)  # (...,) in [-3, ~3]
    freqs = torch.pi * 2.0 ** torch.arange(6, device=v.device, dtype=v.dtype)  # (6,)
    angle = log[..., None] * freqs
    out = torch.cat([torch.sign(v)[..., None], log[..., None] / 3, torch.tanh(v)[..., None], angle.sin(), angle.cos(), known[..., None].to(v.dtype)], -1)
    return out * known[..., None]


# ----------------------------------------------------------------------------------------------
# video: frames <-> tubelets
# ----------------------------------------------------------------------------------------------
def n_blocks(n_frames: int, tubelet_t: int) -> int:
    return math.ceil(n_frames / tubelet_t)


def pad_time(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(B, T, ...) -> (B, ceil(T / multiple) * multiple, ...), repeating the last step."""
    extra = -x.shape[1] % multiple
    if extra == 0:
        return x
    return torch.cat([x, x[:, -1:].expand(-1, extra, *x.shape[2:])], dim=1)


def frames_to_tubelets(frames: torch.Tensor, tubelet_t: int, patch: int) -> torch.Tensor:
    """(B, T, H, W, C) -> (B, nb, (H/p)*(W/p), tubelet_t*p*p*C); T is padded with its last frame."""
    frames = pad_time(frames, tubelet_t)
    return rearrange(frames, "b (n t) (h p) (w q) c -> b n (h w) (t p q c)", t=tubelet_t, p=patch, q=patch)


def tubelets_to_frames(tubelets: torch.Tensor, n_frames: int, tubelet_t: int, patch: int, grid: int) -> torch.Tensor:
    """(B, nb, grid*grid, tubelet_t*p*p*C) -> (B, n_frames, H, W, C), the inverse of frames_to_tubelets."""
    frames = rearrange(tubelets, "b n (h w) (t p q c) -> b (n t) (h p) (w q) c", h=grid, w=grid, t=tubelet_t, p=patch, q=patch)
    return frames[:, :n_frames]


# ----------------------------------------------------------------------------------------------
# audio and actions
# ----------------------------------------------------------------------------------------------
def audio_features(wave: torch.Tensor, bins: int) -> torch.Tensor:
    """(..., samples_per_frame) waveform -> (..., bins) log-RMS envelope in [0, ~1]."""
    rms = wave.unflatten(-1, (bins, -1)).pow(2).mean(-1).sqrt()
    return (torch.log(rms + AUDIO_FLOOR) - math.log(AUDIO_FLOOR)) / -math.log(AUDIO_FLOOR)


def block_actions(actions: torch.Tensor, nb: int, tubelet_t: int) -> torch.Tensor:
    """(B, T, A) per-frame actions -> (B, nb, tubelet_t, A): block b holds a_f for
    f = (b+1)*tt - 1 + j, the actions that drive the frames of block b+1; zeros past T."""
    B, T, A = actions.shape
    idx = (torch.arange(nb)[:, None] + 1) * tubelet_t - 1 + torch.arange(tubelet_t)[None, :]  # (nb, tt)
    padded = torch.cat([actions, actions.new_zeros(B, 1, A)], dim=1)  # index T = zeros
    return padded[:, idx.clamp(max=T).to(actions.device)]


def steady_actions(actions: torch.Tensor, nb: int, tubelet_t: int) -> torch.Tensor:
    """(B, T, A) per-frame actions -> (B, nb, tubelet_t) bool, laid out as `block_actions`: whether
    each of those actions equals the frame before's (False for the first frame and past T)."""
    same = torch.zeros(actions.shape[:2], dtype=actions.dtype, device=actions.device)
    same[:, 1:] = (actions[:, 1:] == actions[:, :-1]).all(-1).to(actions.dtype)
    return block_actions(same[..., None], nb, tubelet_t)[..., 0] > 0.5


def state_features(states: torch.Tensor, mask: torch.Tensor, pos_scale: float, vel_scale: float) -> torch.Tensor:
    """(B, T, n, 6) positions (m) and velocities (m/s), mask (B, n) tracked bodies -> (B, T, n * 7):
    per body position / pos_scale, velocity / vel_scale (zero if untracked) and the tracked flag."""
    m = mask[:, None, :, None].to(states.dtype).expand(*states.shape[:3], 1)  # (B, T, n, 1)
    scale = states.new_tensor([pos_scale] * 3 + [vel_scale] * 3)
    return torch.cat([states / scale * m, m], dim=-1).flatten(2)


# ----------------------------------------------------------------------------------------------
# batch
# ----------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """A batch of clips for `WorldModel.forward` (all tensors on one device).

    frames:        (B, T, H, W, 3) uint8 RGB
    text:          (B, Lt) int64 caption tokens [BOS, bytes, EOT] padded with PAD
    text_values:   (B, Lt) float32 the value of the numeric literal each token is part of, NaN
                   elsewhere: a property derived from `text` (`text_values`) when first read
    audio:         (B, T, samples_per_frame) float32 waveform cut per frame, or None (no audio)
    audio_present: (B, T) bool, False where a frame's audio is unknown, or None (all known)
    actions:       (B, T, action_dim) float32, a_t applied during frame t (zero-padded), or None
    active:        (B,) bool, True where the clip's episode has actions at all (an actuated
                   scene: push, gears, pour), False for a passive one, whose bodies nothing
                   drives; or None (every clip active where `actions` is given)
    states:        (B, T, n_max_objects, 6) float32 positions (m) and velocities (m/s), or None
    spins:         (B, T, n_max_objects, 3) float32 angular velocities (rad/s), or None (no spin):
                   not tokens; the landing impulse's slip (`WorldModel.rolling`)
    state_mask:    (B, n_max_objects) bool, True for the bodies an episode has, or None
    state_present: (B,) bool, False for clips whose states are hidden from the state tokens (they
                   remain loss targets), or None (present iff `states` is given)
    bodies:        (B, n_max_objects, 7) float32 each body's radius m, mass kg, restitution,
                   friction and hinge damping 1/s as the simulator set them (`sim.body_properties`; NaN where not stated), then 1
                   where the actions drive it, else 0 (`sim.driven_bodies`; NaN past the episode's
                   bodies), then its roll share (`sim.roll_shares`; NaN where not stated), or None
    """

    frames: torch.Tensor
    text: torch.Tensor
    audio: torch.Tensor | None = None
    audio_present: torch.Tensor | None = None
    actions: torch.Tensor | None = None
    active: torch.Tensor | None = None
    states: torch.Tensor | None = None
    state_mask: torch.Tensor | None = None
    state_present: torch.Tensor | None = None
    bodies: torch.Tensor | None = None
    spins: torch.Tensor | None = None

    @functools.cached_property
    def text_values(self) -> torch.Tensor:
        return torch.from_numpy(text_values(self.text.cpu().numpy())).to(self.text.device)

    def to(self, device) -> Batch:
        return Batch(**{f.name: None if (v := getattr(self, f.name)) is None else v.to(device) for f in fields(self)})

    @classmethod
    def coerce(cls, batch) -> Batch:
        """A Batch, or a dict with the same keys (a derived `text_values` is ignored)."""
        return batch if isinstance(batch, Batch) else cls(**{k: v for k, v in batch.items() if k != "text_values"})

    def __len__(self) -> int:
        return self.frames.shape[0]


def _check_episode(ep, cfg: ModelConfig, what: str = "episode") -> None:
    if ep.frames is None:
        raise ValueError(f"{what}: frames is None; the world model needs rendered frames")
    T, H, W, C = ep.frames.shape
    if (H, W, C) != (cfg.image_size, cfg.image_size, 3):
        raise ValueError(f"{what}: frames of shape {ep.frames.shape}; allowed: (T, {cfg.image_size}, {cfg.image_size}, 3) (ModelConfig.image_size)")
    if abs(float(ep.fps) - cfg.fps) > 1e-6:
        raise ValueError(f"{what}: fps={ep.fps}; allowed: {cfg.fps} (ModelConfig.fps)")
    if cfg.audio_bins and ep.audio is not None and ep.audio_rate != cfg.audio_rate:
        raise ValueError(f"{what}: audio_rate={ep.audio_rate}; allowed: {cfg.audio_rate} (ModelConfig.audio_rate)")
    if cfg.action_dim and ep.actions is not None and ep.actions.shape[1] > cfg.action_dim:
        raise ValueError(f"{what}: actions of width {ep.actions.shape[1]}; allowed: <= {cfg.action_dim} (ModelConfig.action_dim)")


def episode_arrays(ep, cfg: ModelConfig, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """One episode's arrays in `Batch` layout (no batch axis). `n_frames` (default len(frames))
    sets T for audio, actions and states; frames themselves are not padded here."""
    _check_episode(ep, cfg)
    T = len(ep.frames) if n_frames is None else n_frames
    out = {"frames": ep.frames, "text": np.asarray(encode_text(ep.caption, cfg.max_text_len), np.int64)}
    if cfg.audio_bins:
        spf = cfg.samples_per_frame
        wave = np.zeros(T * spf, np.float32)
        have = 0 if ep.audio is None else min(len(ep.audio), T * spf)
        if have:
            wave[:have] = ep.audio[:have]
        out["audio"] = wave.reshape(T, spf)
        out["audio_present"] = np.arange(1, T + 1) * spf <= have
    if cfg.action_dim:
        actions = np.zeros((T, cfg.action_dim), np.float32)
        if ep.actions is not None:
            a = np.asarray(ep.actions, np.float32)[:T]
            actions[: len(a), : a.shape[1]] = a
        out["actions"] = actions
        out["active"] = np.bool_(ep.actions is not None)
    n = min(ep.states.shape[1], cfg.n_max_objects)  # tracked bodies
    states = np.zeros((T, cfg.n_max_objects, 6), np.float32)
    s = np.asarray(ep.states[:T, :n])
    states[: len(s), :n, :3] = s[..., 0:3]
    states[: len(s), :n, 3:] = s[..., 7:10]
    out["states"] = states
    spins = np.zeros((T, cfg.n_max_objects, 3), np.float32)
    spins[: len(s), :n] = s[..., 10:13]
    out["spins"] = spins
    out["state_mask"] = np.arange(cfg.n_max_objects) < n
    properties = body_properties(ep)[:n]  # (n, 5)
    bodies = np.full((cfg.n_max_objects, properties.shape[1] + 2), np.nan, np.float32)
    bodies[:n, :-2] = properties
    bodies[:n, -2] = driven_bodies(ep)[:n]
    bodies[:n, -1] = roll_shares(ep)[:n]
    out["bodies"] = bodies
    return out


def collate(episodes: Sequence, cfg: ModelConfig) -> Batch:
    """Episodes (or clips cut with `Episode.slice`) of equal length -> a `Batch` (CPU tensors)."""
    lengths = {len(ep.frames) for ep in episodes}
    if len(lengths) != 1:
        raise ValueError(f"collate: episodes of different lengths {sorted(lengths)}; allowed: all equal (cut clips first)")
    items = [episode_arrays(ep, cfg) for ep in episodes]
    Lt = max(len(it["text"]) for it in items)
    text = torch.full((len(items), Lt), PAD, dtype=torch.long)
    for i, it in enumerate(items):
        text[i, : len(it["text"])] = torch.from_numpy(it["text"])
    stack = lambda key: torch.from_numpy(np.stack([it[key] for it in items])) if key in items[0] else None  # noqa: E731
    return Batch(
        frames=stack("frames"),
        text=text,
        audio=stack("audio"),
        audio_present=stack("audio_present"),
        actions=stack("actions"),
        active=stack("active"),
        states=stack("states"),
        state_mask=stack("state_mask"),
        bodies=stack("bodies"),
        spins=stack("spins"),
    )


# ----------------------------------------------------------------------------------------------
# layout: modality type, 3-D position and block id of every token
# ----------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """Per-token metadata of a sequence (shared by the batch)."""

    types: torch.Tensor  # (L,) int64 modality (config.TEXT ...)
    pos: torch.Tensor  # (L, 3) int64 rotary position (time, row, col)
    block: torch.Tensor  # (L,) int64 time block, -1 for text

    def __len__(self) -> int:
        return len(self.types)

    def __add__(self, other: Layout) -> Layout:
        return Layout(*(torch.cat([a, b]) for a, b in zip((self.types, self.pos, self.block), (other.types, other.pos, other.block))))

    def to(self, device) -> Layout:
        return Layout(self.types.to(device), self.pos.to(device), self.block.to(device))


def text_layout(n_text: int) -> Layout:
    i = torch.arange(n_text)
    return Layout(torch.full((n_text,), TEXT), i[:, None].expand(n_text, 3).clone(), torch.full((n_text,), -1))


def block_layout(cfg: ModelConfig, first: int, count: int) -> Layout:
    """Layout of blocks first .. first+count-1 (each cfg.block_len tokens, in sequence order)."""
    tt, g = cfg.tubelet_t, cfg.grid
    types, pos = [SEP], [(0, 0, 0)]
    types += [AUDIO] * cfg.n_audio
    pos += [(j, 0, 0) for j in range(cfg.n_audio)]
    types += [ACTION] * cfg.n_action
    pos += [(tt - 1 + j, 0, 0) for j in range(cfg.n_action)]  # a_f sits at its own frame f
    types += [STATE] * cfg.n_state
    pos += [(j, 0, 0) for j in range(cfg.n_state)]
    types += [VIDEO] * cfg.n_patches
    pos += [(0, r, c) for r in range(g) for c in range(g)]
    types_t, pos_t = torch.tensor(types), torch.tensor(pos)  # (S,), (S, 3)
    b = torch.arange(first, first + count)
    pos_all = pos_t[None].repeat(count, 1, 1)  # (count, S, 3)
    pos_all[..., 0] += cfg.max_text_len + b[:, None] * tt
    return Layout(types_t.repeat(count), pos_all.reshape(-1, 3), b.repeat_interleave(len(types)))


def clip_layout(cfg: ModelConfig, n_text: int, nb: int) -> Layout:
    return text_layout(n_text) + block_layout(cfg, 0, nb)


def block_causal_mask(q_block: torch.Tensor, k_block: torch.Tensor, k_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean attention mask (True = may attend): query of block bq sees keys of block <= bq
    (text is block -1, so everyone sees text and text sees only text).

    q_block (Lq,), k_block (Lk,), k_valid (B, Lk) or None -> (B or 1, 1, Lq, Lk)
    """
    mask = (k_block[None, :] <= q_block[:, None])[None, None]  # (1, 1, Lq, Lk)
    if k_valid is not None:
        mask = mask & k_valid[:, None, None, :]
    return mask


# ----------------------------------------------------------------------------------------------
# embedding: raw tokens -> d_model
# ----------------------------------------------------------------------------------------------
class UniTokenEmbed(nn.Module):
    """Projects every modality into d_model and adds the modality-type embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.cfg = cfg
        self.text = nn.Embedding(TEXT_VOCAB, D)
        self.number = nn.Linear(NUMBER_FEATURES, D)  # the values of numeric literals (`number_features`)
        self.video = nn.Linear(cfg.tubelet_dim, D)
        self.patch_pos = nn.Parameter(torch.zeros(cfg.n_patches, D))  # absolute (row, col) of a tubelet
        self.sep = nn.Parameter(torch.zeros(D))
        self.type_emb = nn.Embedding(len(MODALITIES), D)
        if cfg.audio_bins:
            self.audio = nn.Linear(cfg.audio_bins, D)
            self.audio_slot = nn.Parameter(torch.zeros(cfg.n_audio, D))  # which frame of the block
            self.audio_absent = nn.Parameter(torch.zeros(D))
        if cfg.action_dim:
            self.action = nn.Linear(cfg.action_dim, D)
            self.action_slot = nn.Parameter(torch.zeros(cfg.n_action, D))
        if cfg.state_tokens:
            self.state = nn.Linear(cfg.n_max_objects * 7, D)  # per body: pos, vel (normalised), tracked flag
            self.state_slot = nn.Parameter(torch.zeros(cfg.n_state, D))
            self.state_absent = nn.Parameter(torch.zeros(D))
        for p in (self.patch_pos, self.sep):
            nn.init.normal_(p, std=0.02)

    def embed_text(self, text: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """text (B, Lt) int64, values (B, Lt) float32 (`text_values`) -> (B, Lt, D)"""
        return self.text(text) + self.number(number_features(values)) + self.type_emb.weight[TEXT]

    def embed_blocks(
        self,
        tubelets: torch.Tensor,
        audio_feat: torch.Tensor | None,
        audio_present: torch.Tensor | None,
        actions: torch.Tensor | None,
        state_feat: torch.Tensor | None = None,
        state_present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One or more time blocks -> (B, nb * block_len, D) in `block_layout` order.

        tubelets: (B, nb, Np, tubelet_dim) pixels in [0, 1]
        audio_feat: (B, nb, tt, audio_bins); audio_present: (B, nb, tt) bool
        actions: (B, nb, tt, action_dim)
        state_feat: (B, nb, tt, n_max_objects * 7) from `state_features`; state_present: (B,) bool
        """
        cfg, ty = self.cfg, self.type_emb.weight
        B, nb = tubelets.shape[:2]
        parts = [(self.sep + ty[SEP]).expand(B, nb, 1, -1)]  # (B, nb, 1, D)
        if cfg.audio_bins:
            a = self.audio(audio_feat) + self.audio_slot  # (B, nb, tt, D)
            a = torch.where(audio_present[..., None], a, self.audio_absent)
            parts.append(a + ty[AUDIO])
        if cfg.action_dim:
            parts.append(self.action(actions) + self.action_slot + ty[ACTION])  # (B, nb, tt, D)
        if cfg.state_tokens:
            s = self.state(state_feat) + self.state_slot  # (B, nb, tt, D)
            s = torch.where(state_present[:, None, None, None], s, self.state_absent)
            parts.append(s + ty[STATE])
        parts.append(self.video(tubelets * 2 - 1) + self.patch_pos + ty[VIDEO])  # (B, nb, Np, D)
        return torch.cat(parts, dim=2).flatten(1, 2)  # (B, nb * S, D)
