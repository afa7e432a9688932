"""The adaptive BC weight of Zhao et al. 2022: a PD-style controller driven by online episode returns.

Scores are D4RL normalized scores as fractions (1.0 = expert). Written exactly as the official code:
after each training episode with score c and length T,
    alpha <- clip(alpha + T * (-Kp * (R_target - R_avg) + Kd * max(0, R_avg - c)), 0, alpha_max)
    R_avg <- 0.05 * c + 0.95 * R_avg
so alpha falls while the running score is below target (less BC, more RL) and rises again when an
episode does worse than the running average (a drop in performance calls for more BC).
"""
from __future__ import annotations

import dataclasses

R_AVG_DECAY = 0.95  # weight of the old running score in the moving average (official code)


def next_alpha(alpha: float, r_avg: float, score: float, length: int, *, kp: float, kd: float,
               r_target: float, alpha_max: float) -> tuple[float, float]:
    """One controller step after an episode of normalized score `score` and `length` steps -> (alpha, r_avg)."""
    change = length * (-kp * (r_target - r_avg) + kd * max(0.0, r_avg - score))
    alpha = min(max(alpha + change, 0.0), alpha_max)
    r_avg = (1.0 - R_AVG_DECAY) * score + R_AVG_DECAY * r_avg
    return alpha, r_avg


@dataclasses.dataclass
class AlphaController:
    """The controller's constants and its one state, R_avg. α itself is the agent's (`agent.alpha`, in the agent's
    checkpoint): `start` and `episode_end` return the α to use, from the α in use."""

    alpha_max: float = 0.4
    kp: float = 3e-5
    kd: float = 1e-4
    r_target: float = 1.05
    r_avg: float = 0.0

    def start(self, initial_score: float) -> float:
        """Before online training: R_avg = the pretrained policy's score (one episode); returns α = alpha_max."""
        self.r_avg = float(initial_score)
        return float(self.alpha_max)

    def episode_end(self, alpha: float, score: float, length: int) -> float:
        """After a training episode of normalized score `score` (a fraction) and `length` steps: the next α."""
        alpha, self.r_avg = next_alpha(float(alpha), self.r_avg, float(score), int(length), kp=self.kp, kd=self.kd,
                                       r_target=self.r_target, alpha_max=self.alpha_max)
        return alpha

    def state_dict(self) -> dict:
        return {"r_avg": self.r_avg}

    def load_state_dict(self, state: dict) -> None:
        self.r_avg = float(state["r_avg"])  # (checkpoints before α moved to the agent also hold an equal "alpha")
