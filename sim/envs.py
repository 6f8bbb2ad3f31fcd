"""Gymnasium environments: every scene family as `physfusion/<Family>-v0` (Drop, Projectile, TableFall...).

    import gymnasium as gym, sim
    env = gym.make("physfusion/Drop-v0", render_mode="rgb_array", params={"num_objects": 3})
    obs, info = env.reset(seed=0)          # the same initial state as sim.simulate("drop", ..., seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    env.render().shape                     # (64, 64, 3) uint8

The contract is gymnasium's MujocoEnv's, one `step` per video frame (1/fps s, 1/(fps*timestep) MuJoCo
steps). These environments exist for data collection, control (an external force on the primary
body, plus the family's actuators) and as the simulator behind the world model's query environment;
the physics is passive, so there is no task: **reward is always 0.0** and `terminated` is False unless
the simulation goes unstable. Wrap an env to add a task reward.

- reset(seed, options): the family's parameters are drawn from `seed` exactly as `sim.simulate` draws
  them (options: `params` fixes some by name, `split` picks train|val|ood ranges). Without a seed, the
  episode seed comes from the env's np_random, so a sequence of resets after one seeded reset repeats.
- action: Box (3 + nu,) float32: a force (N, world frame) on the centre of mass of the primary tracked
  body, bounded by ±max_force (default 20 N, about twice the weight of 1 kg), then the actuator
  controls within their ctrlrange (±1 where unlimited).
  `env.unwrapped.scripted_action()` is the family's own (passive or scripted) action for this frame.
- observation, by obs_type:
    "state"  Box (max_bodies * 13,) float64: the tracked bodies' states (sim.STATE_SLICES: position,
             quaternion wxyz, linear and angular velocity, world frame), zero-padded to max_bodies
             (info["body_mask"] says which slots are real)
    "pixels" Box (height, width, 3) uint8 from the scene's `main` camera
    "pixels_state"  Dict {"pixels", "state"}
- truncated after the family's episode length (`seconds`, default the family's): an episode has
  T = round(seconds * fps) observations, like a `sim.Episode`.
- info: time (s), contacts (the contact events that began during the last frame, as dicts with their
  impulse so far), n_contacts (touching geom pairs now), body_names, body_mask, unstable; reset adds
  params (every realised parameter) and seed.
- vector envs: `gym.make_vec(id, num_envs, vectorization_mode="sync" | "async")`. OpenGL contexts do
  not survive fork, so async envs that render (render_mode or pixel observations) need spawned
  workers: `vector_kwargs={"context": "spawn"}`.
- sim.UnstableSimulation (NaN, energy blow-up, deep penetration) ends the episode: terminated=True,
  info["unstable"] = True, info["error"] the reason, and the observation is the last stable one.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.engine import Simulation, UnstableSimulation, compile_scene, frames_for
from sim.params import ParamError, check_split
from sim.render import FrameRenderer
from sim.scenes import SCENES, get_family
from sim.simulate import check_render_settings, realize_params

OBS_TYPES = ("state", "pixels", "pixels_state")
STATE_DIM = 13


def env_id(scene: str) -> str:
    """`drop` -> `physfusion/Drop-v0`, `table_fall` -> `physfusion/TableFall-v0`."""
    return "physfusion/" + "".join(part.capitalize() for part in scene.split("_")) + "-v0"


class PhysicsEnv(gym.Env):
    """One scene family as a gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        scene: str,
        *,
        params: dict | None = None,
        split: str = "train",
        seconds: float | None = None,
        fps: float = 20,
        width: int = 64,
        height: int = 64,
        obs_type: str = "state",
        render_mode: str | None = None,
        camera: str = "main",
        max_force: float = 20.0,
        max_bodies: int | None = None,
    ):
        self.family = get_family(scene)
        self.scene = scene
        self.params = dict(params or {})
        self.split = check_split(split)
        self.seconds = self.family.seconds if seconds is None else seconds
        self.fps = fps
        self.width, self.height, self.camera = width, height, camera
        check_render_settings(self.seconds, fps, width, height)
        if obs_type not in OBS_TYPES:
            raise ParamError(f"parameter 'obs_type': got {obs_type!r}; allowed: one of {', '.join(OBS_TYPES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ParamError(f"parameter 'render_mode': got {render_mode!r}; allowed: None or 'rgb_array'")
        self.obs_type, self.render_mode = obs_type, render_mode
        self.metadata = {**self.metadata, "render_fps": fps}
        self.n_frames = frames_for(self.seconds, fps)

        # The spaces are fixed for the env's life; the structure of a scene (how many bodies) can vary
        # with its parameters, so probe the largest and pad to it.
        realize_params(scene, self.params, 0, split)  # bad fixed params fail here, naming the parameter
        probe_scene, probe_model, n_tracked = self._probe()
        Simulation(probe_scene, fps, model=probe_model)  # an fps that is not a whole number of steps fails here
        self.max_bodies = max(n_tracked, max_bodies or 0)
        nu = probe_model.nu
        ctrl_low = np.where(probe_model.actuator_ctrllimited, probe_model.actuator_ctrlrange[:, 0], -1.0)
        ctrl_high = np.where(probe_model.actuator_ctrllimited, probe_model.actuator_ctrlrange[:, 1], 1.0)
        self.action_space = spaces.Box(
            np.concatenate([np.full(3, -max_force), ctrl_low]).astype(np.float32),
            np.concatenate([np.full(3, max_force), ctrl_high]).astype(np.float32),
            shape=(3 + nu,),
            dtype=np.float32,
        )
        state = spaces.Box(-np.inf, np.inf, shape=(self.max_bodies * STATE_DIM,), dtype=np.float64)
        pixels = spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
        self.observation_space = {
            "state": state,
            "pixels": pixels,
            "pixels_state": spaces.Dict({"pixels": pixels, "state": state}),
        }[obs_type]

        self.sim: Simulation | None = None
        self._renderer: FrameRenderer | None = None
        self._frame = 0
        self._seen_events = 0
        self._last_obs = None

    def _probe(self):
        """(scene, compiled model, number of tracked bodies) of the largest scene seen: the family
        with every free integer parameter at its largest valid value, and a few ordinary draws."""
        ints = {p.name: int(p.valid[1]) for p in self.family.params.params if p.kind == "int" and p.name not in self.params}
        best = None
        for given in ([{**self.params, **ints}] if ints else []) + [self.params]:
            for seed in range(4):
                try:
                    built = self.family.build(realize_params(self.scene, given, seed, self.split))
                except ParamError:  # e.g. a cross-parameter check rejects the extreme combination
                    continue
                if best is None or len(built.tracked) > best[2]:
                    best = (built, compile_scene(built), len(built.tracked))
        return best

    # ----------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"params", "split"})
        if unknown:
            raise ParamError(f"reset options: unknown {', '.join(map(repr, unknown))}; allowed: 'params', 'split'")
        split = check_split(options.get("split", self.split))
        episode_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31 - 1))
        values = realize_params(self.scene, {**self.params, **(options.get("params") or {})}, episode_seed, split)
        built = self.family.build(values)
        model = compile_scene(built)
        if len(built.tracked) > self.max_bodies or model.nu != self.action_space.shape[0] - 3:
            raise ParamError(
                f"scene {self.scene!r}: these parameters give {len(built.tracked)} bodies and {model.nu} actuators; "
                f"this env was made for at most {self.max_bodies} bodies and {self.action_space.shape[0] - 3} "
                f"actuators (pass max_bodies=..., or fix the structural parameters with params=...)"
            )
        self._close_renderer()
        self.sim = Simulation(built, self.fps, model=model)
        if self.render_mode == "rgb_array" or self.obs_type != "state":
            self._renderer = FrameRenderer(model, self.width, self.height, self.sim.body_ids, camera=self.camera)
        self._frame, self._seen_events = 0, 0
        self._last_obs = self._observation()
        info = self._info()
        info.update(params=values, seed=episode_seed)
        return self._last_obs, info

    def step(self, action):
        if self.sim is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, np.float64).reshape(self.action_space.shape)
        unstable = None
        try:
            self.sim.step(action)
            self._last_obs = self._observation()
        except UnstableSimulation as err:
            unstable = str(err)
        self._frame += 1
        info = self._info()
        if unstable is not None:
            info.update(unstable=True, error=unstable)
            self._last_obs = _copy(self._last_obs)  # a new object, as gymnasium asks of every step
        truncated = unstable is None and self._frame >= self.n_frames - 1
        return self._last_obs, 0.0, unstable is not None, truncated, info

    def render(self):
        if self.render_mode != "rgb_array" or self.sim is None:
            return None
        return self._renderer.render(self.sim.data)[0]

    def scripted_action(self) -> np.ndarray:
        """The family's own action for the current frame (zero force, its scripted controls)."""
        return self.sim.scripted_action().astype(np.float32)

    def close(self):
        self._close_renderer()
        self.sim = None

    # ----------------------------------------------------------------------------------------------

    def _close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _state(self) -> np.ndarray:
        state = np.zeros((self.max_bodies, STATE_DIM))
        states = self.sim.states()
        state[: len(states)] = states
        return state.reshape(-1)

    def _observation(self):
        if self.obs_type == "state":
            obs = self._state()
            if not np.isfinite(obs).all():
                raise UnstableSimulation("non-finite body state")
            return obs
        pixels = self._renderer.render(self.sim.data)[0]
        return pixels if self.obs_type == "pixels" else {"pixels": pixels, "state": self._state()}

    def _info(self) -> dict:
        sim = self.sim
        events = sim.contacts.events
        new = [dataclasses.asdict(e) for e in events[self._seen_events :]]
        self._seen_events = len(events)
        mask = np.zeros(self.max_bodies, bool)
        mask[: len(sim.body_ids)] = True
        return {
            "time": sim.time,
            "frame": self._frame,
            "contacts": new,
            "n_contacts": int(sim.data.ncon),
            "body_names": list(sim.scene.tracked),
            "body_mask": mask,
            "unstable": False,
        }


def _copy(obs):
    return {k: v.copy() for k, v in obs.items()} if isinstance(obs, dict) else obs.copy()


def register_envs() -> None:
    """Register `physfusion/<Family>-v0` for every family in sim.SCENES (idempotent)."""
    for scene in SCENES:
        if env_id(scene) not in gym.registry:
            gym.register(env_id(scene), entry_point="sim.envs:PhysicsEnv", kwargs={"scene": scene}, disable_env_checker=False)


register_envs()
