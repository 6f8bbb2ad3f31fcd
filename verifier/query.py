"""Physical queries: controlled English (or JSON / YAML) -> `PhysicalQuery`.

    parse_query("A ball is dropped from 2 m. Where is it after 0.5 s?")
    # PhysicalQuery(scene='drop', params={'height': 2.0, ...}, question='height_at', time=0.5, ...)

Parsing is by meaning, not by template: every number (with its unit, read by pint) becomes a
quantity; its role (height, speed, angle, restitution, ...) is the role whose key words stand
nearest to it; the scene is recognised from its nouns and verbs; the question from the last
sentence. Whatever is not understood, missing or impossible raises `QueryError` with what was
understood so far; nothing is guessed. Values a question does not depend on (a ball's size when
asking when it lands) take neutral defaults, listed in `PhysicalQuery.assumptions`.

Question kinds (`QUESTIONS`), with the unit of their answer:
    height_at t        m     height of the object's lowest point above the floor at time t
    position_at t      m     [x, z]: horizontal distance from the start and height of the lowest point
    time_to_floor      s     time until the object first reaches the floor
    bounce_height      m     apex of the lowest point after the first bounce
    range              m     horizontal distance from the start (table_fall: from the table edge) at landing
    speed_at t         m/s   speed of the centre of mass at time t
    acceleration_at t  m/s^2 magnitude of the centre-of-mass acceleration at time t
    period             s     pendulum period
    velocities_after   m/s   [v1, v2] of two colliding balls along the line of approach, once apart
    angular_speed      rad/s angular velocity of one gear (`body`), signed
    topples / stands   bool  whether a tower topples / stays standing
    collides           bool  whether the two balls touch
    lands_beyond d     bool  whether the landing point lies beyond distance d
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import pint

import sim
from sim.scenes import collision, table_fall

UREG = pint.UnitRegistry()

# question kind -> unit of its answer ("" for yes/no)
QUESTIONS = {
    "height_at": "m",
    "position_at": "m",
    "time_to_floor": "s",
    "bounce_height": "m",
    "range": "m",
    "speed_at": "m/s",
    "acceleration_at": "m/s^2",
    "period": "s",
    "velocities_after": "m/s",
    "angular_speed": "rad/s",
    "topples": "",
    "stands": "",
    "collides": "",
    "lands_beyond": "",
}
TIMED = ("height_at", "position_at", "speed_at", "acceleration_at")
# which questions each scene answers
SCENE_QUESTIONS = {
    "drop": ("height_at", "position_at", "time_to_floor", "bounce_height", "speed_at", "acceleration_at"),
    "projectile": ("height_at", "position_at", "time_to_floor", "bounce_height", "range", "speed_at",
                   "acceleration_at", "lands_beyond"),
    "ramp": ("position_at", "speed_at", "acceleration_at"),
    "pendulum": ("period", "speed_at", "position_at"),
    "collision": ("velocities_after", "collides"),
    "stack": ("topples", "stands"),
    "table_fall": ("range", "time_to_floor", "lands_beyond", "speed_at"),
    "gears": ("angular_speed",),
}
MAX_QUERY_TIME = 20.0  # s; the latest time a question may ask about


class QueryError(ValueError):
    """A query that cannot be understood or holds impossible values. The message says what was
    understood and what is missing or wrong."""


@dataclass
class PhysicalQuery:
    """A physical question about one scene.

    scene: a family in `sim.SCENES`; params: the sim parameters it fixes (complete for the
    question: `sim.simulate(scene, params)` builds it); question: a kind in `QUESTIONS`;
    time: s, for timed questions; distance: m, for `lands_beyond`; body: index of the body asked
    about (gears); assumptions: defaults taken for values the text did not give; text: the
    original wording, if any.
    """

    scene: str
    params: dict[str, Any]
    question: str
    time: float | None = None
    distance: float | None = None
    body: int = 0
    assumptions: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def unit(self) -> str:
        return QUESTIONS[self.question]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: what was understood."""
        extra = "".join(f", {k}={v!r}" for k, v in (("time", self.time), ("distance", self.distance)) if v is not None)
        return f"scene={self.scene!r}, question={self.question!r}{extra}, params={self.params}"


# ------------------------------------------------------------------------------------------------
# Quantities in text

# spelled-out counts ("one" is left alone: "the one below")
NUMBER_WORDS = {w: str(i) for i, w in enumerate("_ _ two three four five six seven eight nine ten".split()) if i > 1}
UNIT_WORDS = (
    r"m/s\^?2|m/s²|m/s|met(?:er|re)s? per second|km/h|kph|mph|ft/s|rad/s|rpm|revolutions per minute|"
    r"degrees?|deg|°|radians?|rad|kilograms?|kg|grams?|g|pounds?|lbs?|"
    r"milliseconds?|ms|seconds?|secs?|s|minutes?|min|"
    r"millimet(?:er|re)s?|mm|centimet(?:er|re)s?|cm|kilomet(?:er|re)s?|km|met(?:er|re)s?|m|feet|foot|ft|inch(?:es)?"
)
QUANTITY = re.compile(
    rf"(?<![\w.])(?P<num>[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[-+]?\.\d+)\s*(?P<unit>(?:{UNIT_WORDS})(?![\w/]))?",
    re.IGNORECASE,
)
PINT_SPELLING = {"°": "degree", "lbs": "lb", "m/s²": "m/s^2", "m/s2": "m/s^2", "kph": "km/h", "secs": "s", "sec": "s"}
DIMENSIONS = {  # pint dimensionality -> our name and SI unit
    "[length]": ("length", "m"),
    "[time]": ("time", "s"),
    "[length] / [time]": ("speed", "m/s"),
    "[length] / [time] ** 2": ("acceleration", "m/s^2"),
    "[mass]": ("mass", "kg"),
}


@dataclass
class Quantity:
    value: float  # SI (m, s, m/s, kg, degrees for angles, rad/s)
    kind: str  # length | time | speed | acceleration | mass | angle | angular_speed | number
    text: str  # as written
    start: int
    end: int
    role: str = ""


def read_quantities(text: str) -> list[Quantity]:
    """Every number in `text`, with its unit converted to SI (angles in degrees)."""
    out = []
    for m in QUANTITY.finditer(text):
        number, unit = float(m.group("num")), (m.group("unit") or "").strip()
        written = m.group(0).strip()
        if not unit:
            out.append(Quantity(number, "number", written, m.start(), m.end()))
            continue
        spelled = PINT_SPELLING.get(unit.lower(), unit)
        q = UREG.Quantity(number, spelled)
        if re.match(r"(deg|rad|°)", unit.lower()) and "/" not in unit:
            kind, value = "angle", float(q.to("degree").magnitude)
        elif q.dimensionality == UREG.rpm.dimensionality:
            kind, value = "angular_speed", float(q.to("rad/s").magnitude)
        else:
            kind, si = DIMENSIONS[str(q.dimensionality)]
            value = float(q.to(si).magnitude)
        out.append(Quantity(value, kind, written, m.start(), m.end()))
    return out


# role -> (kinds it accepts, key words). A quantity takes the role whose key word is nearest to it
# in its clause (ties: the order here).
ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "restitution": (("number",), ("restitution", "bounciness", "elasticity", "cor", "e")),
    "friction": (("number",), ("friction", "mu", "μ", "frictional")),
    "damping": (("number",), ("damping", "damped", "decay")),
    "ratio": (("number",), ("ratio", "times")),
    "count": (("number",), ("blocks", "cubes", "boxes", "bricks", "balls", "gears", "links", "objects", "stack",
                            "tower", "spheres")),
    "time": (("time",), ("after", "at", "later", "in", "t", "time", "when", "once")),
    "offset": (("length",), ("offset", "offsets", "shift", "shifted", "shifts", "overhang", "overhangs",
                             "staggered", "displaced")),
    "size": (("length",), ("diameter", "wide", "across", "size", "edge", "edges", "side", "radius", "cube", "cubes",
                           "block", "blocks", "ball", "sphere", "box", "bob", "big")),
    "length": (("length",), ("long", "length", "string", "rod", "cord", "rope", "pendulum", "arm")),
    "table_height": (("length",), ("table", "desk", "counter", "bench")),
    "distance": (("length",), ("beyond", "farther", "further", "past", "exceed", "exceeds", "than", "least")),
    "height": (("length",), ("from", "height", "high", "above", "drop", "dropped", "tall", "cliff", "ledge",
                             "roof", "released", "falls", "off")),
    "speed": (("speed",), ("at", "speed", "velocity", "moving", "travelling", "traveling", "rolling", "thrown",
                           "launched", "pushed", "with", "going", "fired", "kicked")),
    "mass": (("mass",), ("mass", "weighs", "weighing", "ball", "balls", "kg")),
    "angle": (("angle",), ("angle", "degree", "incline", "ramp", "slope", "from", "at", "released", "pulled",
                           "displaced", "tilted", "above", "elevation")),
    "driver_speed": (("angular_speed",), ("driver", "turns", "spins", "rotates", "speed", "at", "driven")),
}
WORD = re.compile(r"[a-zμ]+")
CLAUSE_END = re.compile(r"[.?!;,](?!\d)")  # not a decimal point


def normalise(text: str) -> str:
    text = text.replace("–", "-").replace("—", "-").replace("×", "x")
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)
    return re.sub(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", lambda m: NUMBER_WORDS[m.group(1).lower()], text,
                  flags=re.IGNORECASE)


def assign_roles(text: str, quantities: list[Quantity], scene: str) -> None:
    """Give every quantity the role whose key word is nearest (in words, within its clause)."""
    lower = text.lower()
    for i, q in enumerate(quantities):
        lo = quantities[i - 1].end if i else 0
        hi = quantities[i + 1].start if i + 1 < len(quantities) else len(text)
        clause_lo = max(lo, max(lower.rfind(c, 0, q.start) for c in ".?!;") + 1)
        before = WORD.findall(lower[clause_lo : q.start])[-5:][::-1]  # nearest first
        if i + 1 < len(quantities) and not text[q.end : hi].strip():  # "2 1 kg balls": read past the next one
            hi = quantities[i + 2].start if i + 2 < len(quantities) else len(text)
        stop = CLAUSE_END.search(lower, q.end)
        after_end = min(hi, stop.start() if stop else hi)
        after = WORD.findall(lower[q.end : after_end])[:3]
        best = None
        for role, (kinds, words) in ROLES.items():
            if q.kind not in kinds:
                continue
            if role == "length" and scene != "pendulum" or role == "table_height" and scene != "table_fall":
                continue
            for dist, word in [(d, w) for d, w in enumerate(before)] + [(d + 0.5, w) for d, w in enumerate(after)]:
                if word in words:
                    if best is None or dist < best[0]:
                        best = (dist, role)
                    break
        if best is None:
            kinds = [r for r, (k, _) in ROLES.items() if q.kind in k]
            if len(kinds) == 1 and q.kind != "number":
                best = (0, kinds[0])
            elif q.kind == "length" and scene in ("drop", "projectile"):
                best = (0, "height")
        if best is None:
            raise QueryError(f"did not understand what {q.text!r} is (a {q.kind}) in: {text!r}")
        q.role = best[1]


# ------------------------------------------------------------------------------------------------
# Scene and question

SCENE_WORDS = [  # first match wins
    ("pendulum", r"pendul|\bswing"),
    ("gears", r"\bgears?\b|\bcogs?\b"),
    ("pour", r"\bpour|\bbeads?\b"),
    ("push", r"\bpaddle|\bpusher\b"),
    ("stack", r"\bstack|\btower|\bblocks\b|\btopple|\bfall over\b|\bcubes\b"),
    ("table_fall", r"\btable|\bdesk|\bcounter\b|\bbench\b"),
    ("collision", r"\bcollid|\bcollision|\bhead-on|\bcrash|"
                  r"\b(hits?|strikes?|struck|bumps? into)\b(?!\s+(the\s+)?(ground|floor))"),
    ("ramp", r"\bramp|\bincline|\bslope|\bslides? down|\brolls? down|\binclined"),
    ("projectile", r"\bthrow|\bthrown|\blaunch|\bkick|\bfired|\bshot\b|\btoss|\bhurl|\bhorizontally|\bprojectile|"
                   r"\blobbed|\bserved"),
    ("drop", r"\bdrop|\bfall|\bfell\b|\breleased|\blet go|\bbounc|\brebound|\bfree fall"),
]
SHAPE_WORDS = [("box", r"\bbox|\bcube|\bblock|\bcrate|\bbrick"), ("cylinder", r"\bcylinder|\bcan\b|\bwheel|\bdisc|\bdisk"),
               ("capsule", r"\bcapsule|\bpill"), ("sphere", r"\bball|\bsphere|\bmarble|\bstone|\brock|\bpebble|\borb")]


def find_scene(text: str) -> str:
    lower = text.lower()
    for scene, pattern in SCENE_WORDS:
        if re.search(pattern, lower):
            return scene
    raise QueryError(
        f"could not tell which scene {text!r} describes; say what happens (dropped, thrown, slides down a ramp, "
        f"pendulum, collides, stack of blocks, off a table, gears)"
    )


def split_question(text: str) -> str:
    """The question sentence: the last sentence that asks."""
    sentences = [s.strip() for s in re.split(r"(?<=[.?!])\s+(?=[A-Z])", text.strip()) if s.strip()]
    for k in range(len(sentences) - 1, -1, -1):
        s = sentences[k]
        if s.endswith("?") or re.match(r"(?i)(how|what|where|when|does|do|will|is|are|would|can|find|compute|"
                                        r"calculate|determine|predict)\b", s):
            return s
    raise QueryError(f"no question found in {text!r}: ask something (how high, how far, when, does it topple, ...)")


def find_question(question: str, scene: str, has_time: bool, has_distance: bool) -> str:
    q = question.lower()
    yes_no = re.match(r"(does|do|will|would|is|are|can)\b", q) is not None
    if yes_no and not has_distance and re.search(r"beyond|farther|further|past|more than|at least", q):
        raise QueryError(f"question {question!r} asks whether it lands beyond a distance, but gives none "
                         f"(e.g. 'beyond 2 m')")
    rules = [
        ("angular_speed", scene == "gears"),
        ("topples", scene == "stack" and re.search(r"topple|fall over|fall down|tip over|tip|collapse|falls", q)),
        ("stands", scene == "stack" and re.search(r"stand|stay|remain|stable|hold|balance", q)),
        ("lands_beyond", yes_no and has_distance),
        ("collides", yes_no and re.search(r"collide|hit|touch|meet|strike|crash", q)),
        ("velocities_after", re.search(r"velocit|speeds?|how fast|move|moving", q) and scene == "collision"),
        ("period", re.search(r"period|how long .*(swing|oscillat|cycle)|one (full )?(swing|oscillation|cycle)", q)),
        ("acceleration_at", has_time and re.search(r"accelerat", q)),
        ("speed_at", has_time and re.search(r"how fast|speed|velocity|moving", q)),
        ("height_at", has_time and (scene == "drop" and re.search(r"where|position|how high|height|altitude", q) or
                                    scene == "projectile" and re.search(r"how high|height|altitude", q))),
        ("position_at", has_time and re.search(r"where|position|located|how far|height", q)),
        ("bounce_height", re.search(r"bounce|rebound|come back up|bounces? back", q)),
        ("time_to_floor", re.search(r"how long|when|what time|how much time|how many seconds", q)),
        ("range", re.search(r"how far|range|distance|where .*land|land", q)),
    ]
    for kind, matched in rules:
        if matched:
            if kind not in SCENE_QUESTIONS.get(scene, ()):
                raise QueryError(
                    f"question {question!r} asks for {kind!r}, which the {scene!r} scene does not answer; "
                    f"it answers: {', '.join(SCENE_QUESTIONS.get(scene, ()))}"
                )
            return kind
    raise QueryError(f"understood scene={scene!r} but not what {question!r} asks; "
                     f"the {scene!r} scene answers: {', '.join(SCENE_QUESTIONS.get(scene, ()))}")


# ------------------------------------------------------------------------------------------------
# Parameters per scene


class Builder:
    """Collects a scene's parameters from the roles found, with defaults noted as assumptions."""

    def __init__(self, scene: str, text: str, quantities: list[Quantity]):
        self.scene, self.text, self.lower = scene, text, text.lower()
        self.by_role: dict[str, list[Quantity]] = {}
        for q in quantities:
            self.by_role.setdefault(q.role, []).append(q)
        self.params: dict[str, Any] = {}
        self.assumptions: list[str] = []
        self.used: set[str] = set()

    def understood(self) -> str:
        roles = {r: [q.text for q in qs] for r, qs in self.by_role.items()}
        return f"scene={self.scene!r}, quantities by role {roles}"

    def one(self, role: str, what: str, required: bool = True) -> float | None:
        self.used.add(role)
        found = self.by_role.get(role, [])
        if len(found) > 1:
            raise QueryError(f"{what}: got {len(found)} values ({', '.join(q.text for q in found)}); "
                             f"allowed: one. Understood: {self.understood()}")
        if not found:
            if required:
                raise QueryError(f"missing {what} for the {self.scene!r} scene. Understood: {self.understood()}")
            return None
        return found[0].value

    def many(self, role: str) -> list[Quantity]:
        self.used.add(role)
        return self.by_role.get(role, [])

    def set(self, name: str, value: Any) -> None:
        self.params[name] = value

    def default(self, name: str, value: Any, why: str = "not stated") -> None:
        self.params[name] = value
        self.assumptions.append(f"{name}={value} ({why})")

    def given_or_default(self, name: str, role: str, what: str, default: Any, why: str = "not stated") -> None:
        value = self.one(role, what, required=False)
        if value is None:
            self.default(name, default, why)
        else:
            self.set(name, value)

    def shape(self, default: str = "sphere") -> str:
        for shape, pattern in SHAPE_WORDS:
            if re.search(pattern, self.lower):
                return shape
        self.assumptions.append(f"shape={default} (not stated)")
        return default

    def leftovers(self) -> None:
        unused = [q.text for r, qs in self.by_role.items() if r not in self.used for q in qs]
        if unused:
            raise QueryError(f"did not understand what {', '.join(map(repr, unused))} refer(s) to in the "
                             f"{self.scene!r} scene. Understood: {self.understood()}")


def size_of(b: Builder, default: float) -> None:
    for q in b.by_role.get("size", []):
        if re.search(r"radius", b.lower[max(0, q.start - 25) : q.end + 12]):
            q.value *= 2
    b.given_or_default("size", "size", "the object's size", default, "not stated; does not change the answer much")


def build_drop(b: Builder, question: str) -> None:
    b.set("num_objects", 1)
    b.set("shape", b.shape())
    size_of(b, 0.1)
    b.given_or_default("mass", "mass", "mass", 1.0, "not stated; does not change the motion")
    b.set("height", b.one("height", "the release height (e.g. 'from 2 m')"))
    if question == "bounce_height":
        b.set("restitution", b.one("restitution", "the restitution (e.g. 'restitution 0.8')"))
    else:
        b.given_or_default("restitution", "restitution", "restitution", 0.5, "not stated; matters only after landing")
    b.given_or_default("friction", "friction", "friction", 0.5, "not stated; does not change a vertical drop")


def build_projectile(b: Builder, question: str) -> None:
    b.set("shape", b.shape())
    size_of(b, 0.1)
    b.given_or_default("mass", "mass", "mass", 1.0, "not stated; no air drag, so it does not change the flight")
    b.set("speed", b.one("speed", "the launch speed (e.g. 'at 5 m/s')"))
    angle = b.one("angle", "the launch angle", required=False)
    if angle is None:
        if re.search(r"horizontal", b.lower):
            angle = 0.0
        elif re.search(r"straight up|vertically", b.lower):
            angle = 90.0
        else:
            raise QueryError(f"missing the launch angle (e.g. 'at 45 degrees', 'horizontally'). "
                             f"Understood: {b.understood()}")
    b.set("angle_deg", angle)
    b.given_or_default("height", "height", "launch height", 0.0, "not stated: launched from the floor")
    if question == "bounce_height":
        b.set("restitution", b.one("restitution", "the restitution"))
    else:
        b.given_or_default("restitution", "restitution", "restitution", 0.5, "not stated; matters only after landing")
    b.given_or_default("friction", "friction", "friction", 0.5, "not stated; matters only after landing")


def build_ramp(b: Builder, question: str) -> None:
    b.set("shape", b.shape(default="box"))
    size_of(b, 0.1)
    b.given_or_default("mass", "mass", "mass", 1.0, "not stated; does not change the motion")
    b.set("angle_deg", b.one("angle", "the incline angle (e.g. 'a 30 degree ramp')"))
    friction = b.one("friction", "friction", required=False)
    if friction is None:
        if not re.search(r"frictionless|smooth|without friction|no friction", b.lower):
            raise QueryError(f"missing the friction coefficient (e.g. 'friction 0.2', or 'frictionless'). "
                             f"Understood: {b.understood()}")
        friction = 0.0
    b.set("friction", friction)
    b.given_or_default("restitution", "restitution", "restitution", 0.2, "not stated; does not change the slide")


def build_pendulum(b: Builder, question: str) -> None:
    double = re.search(r"double", b.lower) is not None
    b.set("links", 2 if double else 1)
    b.set("length", b.one("length", "the pendulum length (e.g. 'a 1 m pendulum')"))
    angles = b.many("angle")
    if not angles or len(angles) > (2 if double else 1):
        raise QueryError(f"the release angle: got {len(angles)} angle(s); allowed: {'1 or 2' if double else 'one'} "
                         f"(e.g. 'released from 10 degrees'). Understood: {b.understood()}")
    b.set("angle_deg", angles[0].value)
    if double:
        b.set("angle2_deg", angles[1].value if len(angles) > 1 else angles[0].value)
    else:
        b.set("angle2_deg", 0.0)
    b.given_or_default("mass", "mass", "bob mass", 1.0, "not stated; does not change the swing")
    size_of(b, min(0.05, b.params["length"]))
    b.given_or_default("damping", "damping", "damping", 0.0, "not stated: no friction at the pivot")


def build_collision(b: Builder, question: str) -> None:
    """Two balls on a line. Each mass mention starts the description of one ball; its speed (or
    'resting') is found in that description. The ball moving faster along the line becomes ball 0
    (coming from -x), as the scene requires; the answer lists the balls in that order."""
    b.set("num_balls", 2)
    for count in b.many("count"):
        if count.value != 2:
            raise QueryError(f"parameter 'num_balls': got {count.text!r}; allowed: 2 for questions")
    masses = b.many("mass")
    if len(masses) == 1 and [c.value for c in b.many("count")] == [2]:  # "two 1 kg balls"
        build_equal_balls(b, masses[0].value)
        return
    if len(masses) != 2:
        raise QueryError(f"the ball masses: got {len(masses)} ({', '.join(q.text for q in masses)}); allowed: "
                         f"two (e.g. 'a 1 kg ball ... a 2 kg ball'). Understood: {b.understood()}")
    speeds = b.many("speed")
    gap = b.lower[masses[0].end : masses[1].start]  # the second ball's description starts at its article
    starts = [m.start() for m in re.finditer(r"\b(a|an|the|another|and|by|hits?|strikes?)\b", gap)]
    bounds = [0, masses[0].end + (starts[-1] if starts else len(gap)), len(b.text)]
    balls = []  # (mass, signed speed or None, description)
    for k, mass in enumerate(masses):
        part = b.lower[bounds[k] : bounds[k + 1]]
        mine = [q for q in speeds if bounds[k] <= q.start < bounds[k + 1]]
        if len(mine) > 1:
            raise QueryError(f"ball {k + 1}: got {len(mine)} speeds; allowed: one. Understood: {b.understood()}")
        if mine:
            balls.append([mass.value, mine[0].value, part])
        elif re.search(r"\b(resting|at rest|stationary|still|motionless|standing)\b", part):
            balls.append([mass.value, 0.0, part])
        else:
            raise QueryError(f"the speed of the {mass.text} ball is missing (e.g. 'at 3 m/s' or 'at rest'). "
                             f"Understood: {b.understood()}")
    if all(v != 0 for _, v, _ in balls):
        part = balls[1][2]
        if re.search(r"toward|opposite|oncoming|approach|other way|head-on", part):
            balls[1][1] = -abs(balls[1][1])
        elif not re.search(r"same direction|away|ahead", part):
            raise QueryError(f"the second ball's direction is missing: is it moving towards the first ball or "
                             f"away from it? Understood: {b.understood()}")
    if balls[0][1] <= balls[1][1]:
        balls.reverse()
        b.assumptions.append(f"ball order: the {balls[0][0]:g} kg ball first (it moves towards the other)")
    b.set("masses", [balls[0][0], balls[1][0]])
    b.set("velocities", [balls[0][1], balls[1][1]])
    collision_kind(b)


def build_equal_balls(b: Builder, mass: float) -> None:
    """Two balls of one mass: one moving, the other resting or coming the other way."""
    speeds = b.many("speed")
    if len(speeds) == 1 and re.search(r"\b(resting|at rest|stationary|still|motionless)\b", b.lower):
        velocities = [speeds[0].value, 0.0]
    elif len(speeds) == 2 and re.search(r"toward|opposite|oncoming|approach|head-on", b.lower):
        velocities = [speeds[0].value, -abs(speeds[1].value)]
    else:
        raise QueryError(f"the balls' velocities: got {len(speeds)} speed(s); allowed: one ball's speed and the "
                         f"other 'at rest', or two speeds towards each other. Understood: {b.understood()}")
    b.set("masses", [mass, mass])
    b.set("velocities", velocities)
    collision_kind(b)


def collision_kind(b: Builder) -> None:
    """Head-on only (text), and the restitution, given or named (elastic, inelastic)."""
    if re.search(r"glancing|oblique|off-cent", b.lower):
        raise QueryError(f"glancing collisions are not understood in text; use the structured form with "
                         f"impact_parameter. Understood: {b.understood()}")
    b.set("impact_parameter", 0.0)
    restitution = b.one("restitution", "the restitution", required=False)
    if restitution is None:
        if re.search(r"perfectly inelastic|completely inelastic|stick together", b.lower):
            restitution = 0.0
        elif re.search(r"\belastic", b.lower):
            restitution = 1.0
        else:
            raise QueryError(f"missing the restitution (e.g. 'restitution 1', 'elastic'). Understood: {b.understood()}")
    b.set("restitution", restitution)
    size_of(b, 0.2)


def build_stack(b: Builder, question: str) -> None:
    n = b.one("count", "the number of blocks (e.g. 'a stack of 4 blocks')")
    if n != int(n):
        raise QueryError(f"parameter 'num_blocks': got {n!r}; allowed: an integer")
    n = int(n)
    b.set("num_blocks", n)
    b.set("size", b.one("size", "the block size (e.g. 'blocks of 10 cm')"))
    offsets = [q.value for q in b.many("offset")]
    if not offsets and re.search(r"\b(aligned|straight|centred|centered|no offset)", b.lower):
        offsets = [0.0]
    if not offsets:
        raise QueryError(f"missing the blocks' offsets (e.g. 'offsets of 3 cm'). Understood: {b.understood()}")
    if len(offsets) == 1:
        offsets = [0.0] + offsets * (n - 1)
        b.assumptions.append("offsets: the bottom block centred on its base, each block above shifted by the "
                             "stated offset from the one below")
    elif len(offsets) == n - 1:
        offsets = [0.0] + offsets
        b.assumptions.append("offsets: the bottom block centred on its base")
    elif len(offsets) != n:
        raise QueryError(f"parameter 'offsets': got {len(offsets)} values; allowed: 1, {n - 1} or {n} "
                         f"(num_blocks={n}). Understood: {b.understood()}")
    b.set("offsets", offsets)
    b.given_or_default("mass", "mass", "block mass", 0.3, "not stated; equal blocks topple by geometry")
    b.given_or_default("friction", "friction", "friction", 0.7, "not stated")


def build_table_fall(b: Builder, question: str) -> None:
    height = b.one("table_height", "the table height", required=False)
    if height is None:
        height = b.one("height", "the table height (e.g. 'a 0.8 m table')")
    b.set("table_height", height)
    b.set("speed", b.one("speed", "the speed at the edge (e.g. 'pushed off at 1 m/s')"))
    b.given_or_default("mass", "mass", "cup mass", 0.3, "not stated; does not change the fall")
    b.given_or_default("friction", "friction", "friction", 0.2, "not stated; the speed is the speed at the edge")


def build_gears(b: Builder, question: str) -> None:
    n = b.one("count", "the number of gears", required=False)
    b.set("num_gears", int(n) if n is not None else 2)
    ratio = b.one("ratio", "the size ratio", required=False)
    if ratio is None:
        m = re.search(r"twice as (big|large|many)", b.lower)
        m_half = re.search(r"half (the size|as big|as many)", b.lower)
        if not (m or m_half):
            raise QueryError(f"missing the gear ratio (e.g. 'ratio 2', 'twice as big'). Understood: {b.understood()}")
        ratio = 2.0 if m else 0.5
    b.set("ratio", ratio)
    b.set("driver_speed", b.one("driver_speed", "the driver's angular speed (e.g. '3 rad/s', '30 rpm')"))


BUILDERS = {
    "drop": build_drop,
    "projectile": build_projectile,
    "ramp": build_ramp,
    "pendulum": build_pendulum,
    "collision": build_collision,
    "stack": build_stack,
    "table_fall": build_table_fall,
    "gears": build_gears,
}
# structured queries: neutral values for parameters a question does not depend on (the rest are required)
STRUCTURED_DEFAULTS = {
    "drop": {"num_objects": 1, "shape": "sphere", "size": 0.1, "mass": 1.0, "restitution": 0.5, "friction": 0.5},
    "projectile": {"shape": "sphere", "size": 0.1, "mass": 1.0, "height": 0.0, "restitution": 0.5, "friction": 0.5},
    "ramp": {"shape": "box", "size": 0.1, "mass": 1.0, "restitution": 0.2},
    "pendulum": {"links": 1, "angle2_deg": 0.0, "mass": 1.0, "size": 0.05, "damping": 0.0},
    "collision": {"num_balls": 2, "size": 0.2, "impact_parameter": 0.0},
    "stack": {"mass": 0.3, "friction": 0.7},
    "table_fall": {"mass": 0.3, "friction": 0.2},
    "gears": {"num_gears": 2},
}
ORDINALS = {"first": 0, "driver": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5}


# ------------------------------------------------------------------------------------------------
# Entry points


def parse_query(source: str | dict) -> PhysicalQuery:
    """Text (controlled English, or a JSON / YAML object) or a mapping -> a validated PhysicalQuery.

    Structured form: {"scene": ..., "params": {...}, "question": kind, "time": s, "distance": m,
    "body": i}, or {"scene": ..., "params": {...}, "question": "<English question>"}.
    Raises QueryError naming what was understood and what is missing or wrong.
    """
    if isinstance(source, dict):
        return from_mapping(source)
    if not isinstance(source, str) or not source.strip():
        raise QueryError(f"query: got {source!r}; allowed: a question in English, or a JSON / YAML mapping")
    stripped = source.strip()
    if stripped.startswith("{") or re.match(r"^scene\s*:", stripped):
        return from_mapping(load_mapping(stripped))
    return from_text(stripped)


def load_mapping(text: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise QueryError(f"query: neither JSON nor YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise QueryError(f"query: got {type(data).__name__}; allowed: a mapping with scene, params, question")
    return data


def from_text(text: str) -> PhysicalQuery:
    text = normalise(text)
    question = split_question(text)
    scene = find_scene(text)
    if scene not in BUILDERS:
        raise QueryError(f"scene {scene!r} was recognised, but questions about it are not supported; "
                         f"supported: {', '.join(BUILDERS)}")
    quantities = read_quantities(text)
    assign_roles(text, quantities, scene)
    in_question = [q for q in quantities if q.start >= text.find(question)]
    times = [q for q in quantities if q.role == "time"]
    distances = [q for q in in_question if q.role == "distance"]
    kind = find_question(question, scene, bool(times), bool(distances))
    b = Builder(scene, text, quantities)
    time = b.one("time", "the time asked about (e.g. 'after 0.5 s')", required=kind in TIMED)
    if time is not None and kind not in TIMED:
        raise QueryError(f"the question {question!r} asks for {kind!r}, which takes no time, but a time was given. "
                         f"Understood: {b.understood()}")
    distance = None
    if kind == "lands_beyond":
        if len(distances) != 1:
            raise QueryError(f"'lands beyond': got {len(distances)} distances in the question; allowed: one")
        distance = distances[0].value
        b.by_role[distances[0].role].remove(distances[0])
        b.by_role["distance"] = []
    BUILDERS[scene](b, kind)
    b.leftovers()
    body = 0
    if scene == "gears":
        m = re.search(r"\b(" + "|".join(ORDINALS) + r"|last|other)\b", question.lower())
        body = ORDINALS.get(m.group(1), None) if m else None
        if m and m.group(1) in ("last", "other"):
            body = b.params["num_gears"] - 1 if m.group(1) == "last" else 1
        if body is None:
            raise QueryError(f"which gear is asked about? (e.g. 'the second gear'). Understood: {b.understood()}")
    query = PhysicalQuery(scene, b.params, kind, time, distance, body, b.assumptions, text)
    return validate(query)


def from_mapping(data: dict) -> PhysicalQuery:
    allowed = {"scene", "params", "question", "time", "distance", "body", "text"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise QueryError(f"query: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}")
    scene, params, question = data.get("scene"), dict(data.get("params") or {}), data.get("question")
    if not isinstance(scene, str) or scene not in BUILDERS:
        raise QueryError(f"parameter 'scene': got {scene!r}; allowed: one of {', '.join(BUILDERS)}")
    if not isinstance(question, str):
        raise QueryError(f"parameter 'question': got {question!r}; allowed: one of {', '.join(QUESTIONS)} or an "
                         f"English question")
    if question not in QUESTIONS:  # an English question about the structured scene
        time = data.get("time")
        kind = find_question(question, scene, time is not None or bool(re.search(r"\d\s*s\b", question)),
                             data.get("distance") is not None)
        if kind in TIMED and time is None:
            times = [q for q in read_quantities(normalise(question)) if q.kind == "time"]
            time = times[0].value if len(times) == 1 else None
        data = {**data, "question": kind, "time": time}
        question = kind
    if question not in SCENE_QUESTIONS[scene]:
        raise QueryError(f"parameter 'question': got {question!r} for scene {scene!r}; allowed: "
                         f"{', '.join(SCENE_QUESTIONS[scene])}")
    assumptions = [f"{k}={v} (not given)" for k, v in STRUCTURED_DEFAULTS[scene].items() if k not in params]
    params = {**STRUCTURED_DEFAULTS[scene], **params}
    missing = [name for name in sim.get_family(scene).params.names() if name not in params]
    if missing:
        raise QueryError(f"scene {scene!r}: missing parameter(s) {', '.join(map(repr, missing))}; "
                         f"given: {sorted(data.get('params') or {})}")
    query = PhysicalQuery(scene, params, question, data.get("time"), data.get("distance"), int(data.get("body") or 0),
                          assumptions, str(data.get("text") or ""))
    return validate(query)


def validate(query: PhysicalQuery) -> PhysicalQuery:
    """Check the values against the scene's ranges (via sim) and the question's own inputs."""
    try:
        realised = sim.realize_params(query.scene, query.params, seed=0)
        query.params = {name: realised[name] for name in sim.get_family(query.scene).params.names()}
    except sim.ParamError as err:
        raise QueryError(f"{err}. Understood: {query.describe()}") from None
    if query.question in TIMED and (query.time is None or not 0 < query.time <= MAX_QUERY_TIME):
        raise QueryError(f"parameter 'time': got {query.time!r}; allowed: a time in (0, {MAX_QUERY_TIME:g}] s. "
                         f"Understood: {query.describe()}")
    if query.question == "lands_beyond" and (query.distance is None or not 0 <= query.distance <= 100):
        raise QueryError(f"parameter 'distance': got {query.distance!r}; allowed: [0, 100] m. "
                         f"Understood: {query.describe()}")
    if query.scene == "gears" and not 0 <= query.body < query.params["num_gears"]:
        raise QueryError(f"parameter 'body': got {query.body!r}; allowed: a gear index in [0, "
                         f"{query.params['num_gears'] - 1}]. Understood: {query.describe()}")
    if query.scene == "collision" and query.params["num_balls"] != 2:
        raise QueryError(f"parameter 'num_balls': got {query.params['num_balls']!r}; allowed: 2 for questions")
    if query.scene == "drop" and query.params["num_objects"] != 1:
        raise QueryError(f"parameter 'num_objects': got {query.params['num_objects']!r}; allowed: 1 for questions")
    return query


def read_batch(path: str) -> list[str | dict]:
    """A JSONL file: one query per line, either a JSON string (English) or a JSON object."""
    out = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise QueryError(f"{path}:{k}: not JSON ({err})") from None
    return out


def closed_form_hint(query: PhysicalQuery) -> float:
    """A generous upper bound (s) on how long the scene must run to answer the question (not an answer)."""
    p, g = query.params, 9.81
    if query.question in TIMED:
        return query.time + 0.1
    if query.scene == "drop":
        fall = math.sqrt(2 * p["height"] / g)
        return fall * (1 + 2 * max(p["restitution"], 0.3)) + 0.3
    if query.scene == "projectile":
        vz = p["speed"] * math.sin(math.radians(p["angle_deg"]))
        flight = (max(vz, 0) + math.sqrt(vz * vz + 2 * g * p["height"])) / g
        return flight * (1 + 2 * max(p["restitution"], 0.3)) + 0.3
    if query.scene == "pendulum":
        return 3.2 * 2 * math.pi * math.sqrt(p["length"] / g) * (1 + (math.radians(p["angle_deg"]) ** 2) / 8) + 0.2
    if query.scene == "collision":
        return collision.IMPACT_TIME + 0.6
    if query.scene == "table_fall":
        return table_fall.START_DISTANCE / p["speed"] * 1.5 + math.sqrt(2 * p["table_height"] / g) + 0.3
    return sim.get_family(query.scene).seconds
