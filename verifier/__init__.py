"""physfusion.verifier: answer physical questions by rolling the world model forward, and verify the
answer against physical laws and the MuJoCo simulator.

    import verifier
    q = verifier.parse_query("A ball is thrown at 5 m/s at 45 degrees. How far does it land?")
    result = verifier.verify(q, model=None, oracle="sim")      # simulator only: verdict 'simulated'
    result.answer                                              # Answer(value=2.54..., unit='m')
    verifier.check_trajectory(episode).consistent              # any sim.Episode, simulated or predicted
"""

from verifier.answer import Answer, AnswerError, read_answer
from verifier.checks import THRESHOLDS, CheckReport, check_trajectory
from verifier.corrupt import KINDS as CORRUPTIONS
from verifier.corrupt import corrupt
from verifier.loop import Verification, verify
from verifier.oracle import simulate_answer
from verifier.query import QUESTIONS, PhysicalQuery, QueryError, parse_query
from verifier.video import write_video

__all__ = [
    "CORRUPTIONS",
    "QUESTIONS",
    "THRESHOLDS",
    "Answer",
    "AnswerError",
    "CheckReport",
    "PhysicalQuery",
    "QueryError",
    "Verification",
    "check_trajectory",
    "corrupt",
    "parse_query",
    "read_answer",
    "simulate_answer",
    "verify",
    "write_video",
]
