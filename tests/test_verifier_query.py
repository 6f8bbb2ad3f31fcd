"""verifier.parse_query: controlled English with units, structured JSON / YAML, and errors that say
what was understood and what is wrong."""

from __future__ import annotations

import json

import pytest

from verifier import PhysicalQuery, QueryError, parse_query
from verifier.query import read_batch


@pytest.mark.parametrize("text,scene,question,params", [
    ("A ball is dropped from 2 m. Where is it after 0.5 s?", "drop", "height_at", {"height": 2.0}),
    ("A rubber ball with restitution 0.8 falls from 1.5 m. How high does it bounce?", "drop", "bounce_height",
     {"height": 1.5, "restitution": 0.8}),
    ("A ball is thrown at 5 m/s at 45 degrees. How far does it land?", "projectile", "range",
     {"speed": 5.0, "angle_deg": 45.0, "height": 0.0}),
    ("A box slides down a 30 degree ramp with friction 0.2. How fast is it after 1 s?", "ramp", "speed_at",
     {"shape": "box", "angle_deg": 30.0, "friction": 0.2}),
    ("A 1 m pendulum is released from 10 degrees. What is its period?", "pendulum", "period",
     {"length": 1.0, "angle_deg": 10.0, "links": 1, "damping": 0.0}),
    ("A 1 kg ball at 3 m/s hits a resting 2 kg ball head-on, restitution 1. What are their velocities afterwards?",
     "collision", "velocities_after", {"masses": [1.0, 2.0], "velocities": [3.0, 0.0], "restitution": 1.0}),
    ("Does a stack of 4 blocks of 10 cm with offsets of 3 cm topple?", "stack", "topples",
     {"num_blocks": 4, "size": 0.1, "offsets": [0.0, 0.03, 0.03, 0.03]}),
    ("A cup is pushed off a 0.8 m table at 1 m/s. How far from the table does it land?", "table_fall", "range",
     {"table_height": 0.8, "speed": 1.0}),
])
def test_the_issue_examples(text, scene, question, params):
    q = parse_query(text)
    assert (q.scene, q.question) == (scene, question)
    for name, value in params.items():
        assert q.params[name] == pytest.approx(value), name


@pytest.mark.parametrize("text,expect", [
    ("How long until a marble released 120 cm above the floor lands?", ("drop", "time_to_floor", "height", 1.2)),
    ("From a height of 3 metres, a stone is let go. What is its height 0.4 seconds later?", ("drop", "height_at", "height", 3.0)),
    ("A stone is thrown horizontally at 3 m/s from a 1.5 m high cliff. Where does it land?",
     ("projectile", "range", "angle_deg", 0.0)),
    ("A ball is kicked at 18 km/h, 30° above the horizontal. What is its range?", ("projectile", "range", "speed", 5.0)),
    ("A crate slides down an incline of 25 degrees, coefficient of friction 0.1. What is its speed 0.8 s after release?",
     ("ramp", "speed_at", "friction", 0.1)),
    ("Will a tower of three cubes, each 8 cm wide and shifted 2 cm from the one below, stay standing?",
     ("stack", "stands", "num_blocks", 3)),
    ("A 2 kg ball at rest is struck by a 1 kg ball at 3 m/s in a perfectly elastic collision. What are the speeds after?",
     ("collision", "velocities_after", "masses", [1.0, 2.0])),
    ("Two gears mesh and the second is twice as big. The driver turns at 30 rpm. How fast does the second gear turn?",
     ("gears", "angular_speed", "driver_speed", 3.14159)),
])
def test_paraphrases_parse_by_meaning(text, expect):
    scene, question, name, value = expect
    q = parse_query(text)
    assert (q.scene, q.question) == (scene, question)
    assert q.params[name] == pytest.approx(value, rel=1e-4)


def test_yes_no_distance_and_time_are_read():
    q = parse_query("A ball is thrown at 4 m/s at 60 degrees from 1 m. Does it land beyond 2 m?")
    assert (q.question, q.distance, q.params["height"]) == ("lands_beyond", 2.0, 1.0)
    assert parse_query("A ball is dropped from 2 m. How fast is it after 300 ms?").time == pytest.approx(0.3)


def test_structured_json_yaml_and_batch(tmp_path):
    as_json = parse_query(json.dumps({"scene": "drop", "params": {"height": 2.0}, "question": "time_to_floor"}))
    as_yaml = parse_query("scene: drop\nparams: {height: 2.0}\nquestion: When does it land?")
    as_dict = parse_query({"scene": "projectile", "params": {"speed": 3, "angle_deg": 40}, "question": "range"})
    assert as_json.question == as_yaml.question == "time_to_floor"
    assert as_json.params["height"] == as_yaml.params["height"] == 2.0
    assert isinstance(as_dict, PhysicalQuery) and as_dict.params["speed"] == 3.0
    batch = tmp_path / "q.jsonl"
    batch.write_text(json.dumps("A ball is dropped from 1 m. When does it land?") + "\n" +
                     json.dumps({"scene": "drop", "params": {"height": 1}, "question": "time_to_floor"}) + "\n")
    assert [parse_query(q).question for q in read_batch(str(batch))] == ["time_to_floor", "time_to_floor"]


@pytest.mark.parametrize("text,match", [
    ("The weather is nice. How are you?", "which scene"),
    ("A ball is dropped. When does it land?", "missing the release height.*Understood"),
    ("A ball is thrown at 50 m/s at 45 degrees. How far does it land?", r"'speed': got 50.0; allowed: .*\[0, 10\]"),
    ("A box slides down a 30 degree ramp. How fast is it after 1 s?", "missing the friction"),
    ("A ball is dropped from 2 m. Where is it after -1 s?", r"'time': got -1.0"),
    ("A ball is dropped from 2 m and 7 kg. How high does it bounce?", "restitution"),
    ("A ball is dropped from 2 m by 3 people. When does it land?", "did not understand what '3'"),
    ("A 1 kg ball at 3 m/s hits a 2 kg ball moving at 1 m/s. What are the velocities afterwards?", "direction"),
    ("A ball is thrown at 5 m/s at 45 degrees. Does it land beyond?", "gives none"),
    ("scene: [1, 2]", "'scene': got \\[1, 2\\]"),
    ("{not json", "neither JSON nor YAML"),
])
def test_bad_queries_raise_query_error_naming_what_is_wrong(text, match):
    with pytest.raises(QueryError, match=match):
        parse_query(text)


def test_structured_errors_name_the_parameter():
    with pytest.raises(QueryError, match=r"'scene': got 'volcano'"):
        parse_query({"scene": "volcano", "params": {}, "question": "range"})
    with pytest.raises(QueryError, match=r"'question': got 'period' for scene 'drop'"):
        parse_query({"scene": "drop", "params": {"height": 1}, "question": "period"})
    with pytest.raises(QueryError, match=r"'restitution': got 1.5"):
        parse_query({"scene": "drop", "params": {"height": 1, "restitution": 1.5}, "question": "bounce_height"})
