"""Regenerate D4RL-style MuJoCo datasets without internet: the D4RL recipe as one command.

    python -m tools.generate_dataset --env hopper --out DIR [--target 44] [--medium-size 1000000]

1. SAC (tools/sac.py) trains online on the gymnasium v5 env, uniform random actions for the first
   --random-steps steps, then one update per environment step.
2. From the end of the random phase on, every --eval-every steps the *stochastic* policy plays
   --eval-episodes episodes; training stops as soon as their mean D4RL normalized score reaches
   --target (default: the D4RL medium dataset's mean score: hopper 44, walker2d 62, halfcheetah 41).
3. Two D4RL v2-format files are written into DIR, each atomically (temporary file + rename):
     <env>-medium-replay-gen.hdf5  every transition collected up to the stop, random phase included;
     <env>-medium-gen.hdf5         --medium-size transitions from the stopped stochastic policy.

If --max-steps is reached first, both files are still written from the last policy, the run says
so loudly, and metadata/generation records "target_reached": false, "stop_reason": "max_steps".

Kill-safe: at the first episode end after every --checkpoint-every steps the whole state (networks,
optimizers, alpha, the RNG, episode counters, the data collected so far) goes to
DIR/<env>-gen.ckpt.pt. Rerunning the same command resumes from it and writes the same arrays as an
uninterrupted run; the checkpoint is deleted once both files exist. Every training episode is reset
with its own seed derived from (--seed, episode index), and checkpoints fall between episodes, so no
simulator state has to be saved. Same seed and --threads -> the same arrays.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from common.checkpoint import load_checkpoint, save_checkpoint
from common.datasets import REF_RETURNS, normalized_score
from common.envs import gym_make
from common.evaluation import Evaluator
from common.utils import set_threads
from tools.sac import SAC, SACConfig

ENV_IDS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
# Mean normalized scores of D4RL's *-medium-v2 datasets: the level the data should have.
DEFAULT_TARGETS = {"hopper": 44.0, "walker2d": 62.0, "halfcheetah": 41.0}
CHECKPOINT_KIND = "dataset-generator"
# Independent seed streams, so e.g. evaluation never changes what training sees.
TRAIN_EPISODES, MEDIUM_EPISODES, EVALUATION, SAMPLING = range(4)
# Arguments that change the data; a checkpoint only resumes a run whose values match.
DATA_ARGS = ("env", "seed", "target", "random_steps", "eval_every", "eval_episodes", "max_steps", "medium_size",
             "batch_size", "lr", "hidden", "gamma", "tau")


def stream_seed(seed: int, stream: int, index: int) -> int:
    """A 32-bit seed for item `index` of random stream `stream` of run `seed`."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.generate_dataset", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", required=True, choices=sorted(ENV_IDS))
    p.add_argument("--out", required=True, help="output folder (files, checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=None,
                   help="stop at this mean normalized score (default: hopper 44, walker2d 62, halfcheetah 41)")
    p.add_argument("--max-steps", type=int, default=1_000_000, help="give up training after this many env steps")
    p.add_argument("--medium-size", type=int, default=1_000_000, help="transitions in <env>-medium-gen.hdf5")
    p.add_argument("--random-steps", type=int, default=10_000, help="uniform random actions first")
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--tau", type=float, default=0.005)
    p.add_argument("--checkpoint-every", type=int, default=10_000, help="env steps between checkpoints")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="replace finished files already in --out")
    args = p.parse_args(argv)
    if args.target is None:
        args.target = DEFAULT_TARGETS[args.env]
    for name in ("max_steps", "medium_size", "eval_every", "eval_episodes", "batch_size", "hidden",
                 "checkpoint_every", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.random_steps < 0:
        p.error("--random-steps must be >= 0")
    return args


class TransitionStore:
    """Growable column arrays, one row per environment step, in D4RL's names and dtypes."""

    def __init__(self, obs_dim: int, act_dim: int, nq: int, nv: int, capacity: int = 4096):
        columns = {
            "observations": ((obs_dim,), np.float32), "actions": ((act_dim,), np.float32),
            "rewards": ((), np.float32), "next_observations": ((obs_dim,), np.float32),
            "terminals": ((), np.bool_), "timeouts": ((), np.bool_),
            "infos/action_log_probs": ((), np.float32), "infos/qpos": ((nq,), np.float32),
            "infos/qvel": ((nv,), np.float32),
        }
        self.data = {k: np.zeros((capacity, *shape), dtype) for k, (shape, dtype) in columns.items()}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **row) -> None:
        if self.size == len(self.data["rewards"]):
            self.data = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in self.data.items()}
        for key, value in row.items():
            self.data[key][self.size] = value
        self.size += 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v[:self.size] for k, v in self.data.items()}

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(self.size, (batch_size,), generator=generator).numpy()
        d = self.data
        return (torch.from_numpy(d["observations"][idx]), torch.from_numpy(d["actions"][idx]),
                torch.from_numpy(d["rewards"][idx]), torch.from_numpy(d["next_observations"][idx]),
                torch.from_numpy(d["terminals"][idx].astype(np.float32)))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.copy()) for k, v in self.arrays().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        n = len(state["rewards"])
        self.data = {k: np.zeros((2 * n + 1, *v.shape[1:]), v.dtype) for k, v in self.data.items()}
        for k, v in state.items():
            self.data[k][:n] = v.numpy()
        self.size = n


@dataclasses.dataclass
class Progress:
    """Everything besides networks and data that a resumed run needs (plain python, checkpointable)."""
    phase: str = "train"  # train -> medium
    step: int = 0  # environment steps taken in training
    train_episodes: int = 0  # finished training episodes (the next one's seed index)
    medium_episodes: int = 0
    train_log: list = dataclasses.field(default_factory=list)
    stop_step: int | None = None
    stop_reason: str | None = None  # target | max_steps
    seconds: float = 0.0  # wall time spent, summed over resumed sessions


class Generator:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.env_id = ENV_IDS[args.env]
        self.out = Path(args.out)
        self.replay_path = self.out / f"{args.env}-medium-replay-gen.hdf5"
        self.medium_path = self.out / f"{args.env}-medium-gen.hdf5"
        self.checkpoint_path = self.out / f"{args.env}-gen.ckpt.pt"
        self.env = gym_make(self.env_id)
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        self.low, self.high = self.env.action_space.low, self.env.action_space.high
        model = self.env.unwrapped.model
        torch.manual_seed(args.seed)  # network initialization
        self.sac = SAC(obs_dim, act_dim, self.low, self.high,
                       SACConfig(args.hidden, args.lr, args.gamma, args.tau),
                       seed=stream_seed(args.seed, SAMPLING, 0))
        self.replay = TransitionStore(obs_dim, act_dim, model.nq, model.nv)
        self.medium = TransitionStore(obs_dim, act_dim, model.nq, model.nv)
        self.progress = Progress()
        self.ref = REF_RETURNS[args.env]
        self._session_start = time.time()
        self._seconds_at_start = 0.0

    # ---------------------------------------------------------------- checkpoints
    def data_config(self) -> dict:
        return {k: getattr(self.args, k) for k in DATA_ARGS}

    def save(self) -> None:
        save_checkpoint(self.checkpoint_path, {
            "algo": "sac", "kind": CHECKPOINT_KIND, "config": self.data_config(),
            "progress": dataclasses.asdict(self.progress) | {"seconds": self.elapsed()},
            "sac": self.sac.state_dict(), "torch_rng": torch.get_rng_state(),
            # After training the replay data is in its file; only the medium data is still growing.
            "replay": self.replay.state_dict() if self.progress.phase == "train" else {},
            "medium": self.medium.state_dict(),
        })

    def try_resume(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        payload = load_checkpoint(self.checkpoint_path, algo="sac", kind=CHECKPOINT_KIND)
        differing = {k: (v, payload["config"].get(k)) for k, v in self.data_config().items()
                     if payload["config"].get(k) != v}
        if differing:
            details = ", ".join(f"{k}: now {now!r}, checkpoint {old!r}" for k, (now, old) in differing.items())
            raise SystemExit(f"{self.checkpoint_path} belongs to a run with other settings ({details}). "
                             "Rerun with the checkpoint's settings, or delete the checkpoint to start over.")
        self.progress = Progress(**payload["progress"])
        self._seconds_at_start = self.progress.seconds
        self.sac.load_state_dict(payload["sac"])
        torch.set_rng_state(payload["torch_rng"])
        if self.progress.phase == "train":
            self.replay.load_state_dict(payload["replay"])
        self.medium.load_state_dict(payload["medium"])
        where = (f"training step {self.progress.step}" if self.progress.phase == "train"
                 else f"medium transition {len(self.medium)}")
        print(f"resuming from {self.checkpoint_path} at {where}", flush=True)
        return True

    def elapsed(self) -> float:
        return self._seconds_at_start + time.time() - self._session_start

    # ---------------------------------------------------------------- acting
    def env_state(self) -> tuple[np.ndarray, np.ndarray]:
        data = self.env.unwrapped.data
        return data.qpos.copy(), data.qvel.copy()

    def random_action(self) -> tuple[np.ndarray, float]:
        """Uniform over the action box; its log density is -log(volume of the box)."""
        u = torch.rand(self.low.shape, generator=self.sac.generator).numpy()
        action = (self.low + u * (self.high - self.low)).astype(np.float32)
        return action, -float(np.log(self.high - self.low).sum())

    def policy_action(self, obs: np.ndarray) -> tuple[np.ndarray, float]:
        action, log_prob = self.sac.act(obs[None].astype(np.float32))
        return action[0], float(log_prob[0])

    def run_episode(self, store: TransitionStore, seed: int, choose_action, after_step) -> None:
        """One episode into `store`; `after_step()` returning True stops mid-episode."""
        obs, _ = self.env.reset(seed=seed)
        while True:
            qpos, qvel = self.env_state()
            action, log_prob = choose_action(obs)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            store.add(**{"observations": obs, "actions": action, "rewards": reward, "next_observations": next_obs,
                         "terminals": terminated, "timeouts": truncated and not terminated,
                         "infos/action_log_probs": log_prob, "infos/qpos": qpos, "infos/qvel": qvel})
            if after_step() or terminated or truncated:
                return
            obs = next_obs

    # ---------------------------------------------------------------- phases
    def train(self) -> None:
        args, pr = self.args, self.progress
        evaluator = Evaluator(self.env_id, args.eval_episodes, self.ref)
        bar = progress_bar(args.max_steps, pr.step, f"SAC {self.env_id}")
        speed_mark = (time.time(), pr.step)

        def choose_action(obs):
            return self.random_action() if pr.step < args.random_steps else self.policy_action(obs)

        def after_step() -> bool:
            nonlocal speed_mark
            pr.step += 1
            bar.update(1)
            if pr.step >= args.random_steps:
                self.sac.update(*self.replay.sample(args.batch_size, self.sac.generator))
            if pr.step >= args.random_steps and pr.step % args.eval_every == 0:
                stochastic = self.evaluate(evaluator, deterministic=False)
                deterministic = self.evaluate(evaluator, deterministic=True)
                steps_per_sec = (pr.step - speed_mark[1]) / max(time.time() - speed_mark[0], 1e-9)
                speed_mark = (time.time(), pr.step)
                pr.train_log.append({"step": pr.step, "stochastic": stochastic, "deterministic": deterministic,
                                     "sec": round(self.elapsed())})
                bar.set_postfix(score=f"{stochastic:.1f}/{args.target:g}")
                tqdm.write(f"step {pr.step}: normalized score stochastic {stochastic:.1f} "
                           f"(deterministic {deterministic:.1f}), target {args.target:g}, alpha {self.sac.alpha:.3f}, "
                           f"{steps_per_sec:.1f} steps/s, {self.elapsed() / 60:.1f} min", file=sys.stdout)
                sys.stdout.flush()
                if stochastic >= args.target:
                    pr.stop_reason = "target"
                    return True
            if pr.step >= args.max_steps:
                pr.stop_reason = "max_steps"
                return True
            return False

        try:
            while pr.stop_reason is None:
                before = pr.step
                self.run_episode(self.replay, stream_seed(args.seed, TRAIN_EPISODES, pr.train_episodes),
                                 choose_action, after_step)
                pr.train_episodes += 1
                if pr.stop_reason is None and self.crossed_checkpoint(before, pr.step):
                    self.save()
        finally:
            bar.close()
            evaluator.close()
        pr.stop_step = pr.step
        if pr.stop_reason == "max_steps":
            print(f"WARNING: --max-steps {args.max_steps} reached before the stochastic policy's normalized "
                  f"score reached --target {args.target:g} (last evaluations: "
                  f"{[round(r['stochastic'], 1) for r in pr.train_log[-3:]]}). Writing both files from the last "
                  "policy anyway; their metadata says target_reached=false.", file=sys.stderr, flush=True)
        else:
            print(f"target {args.target:g} reached at step {pr.step}", flush=True)
        self.write(self.replay_path, self.replay.arrays(), "medium-replay")
        pr.phase = "medium"
        self.replay = None  # written; free the memory
        self.save()

    def crossed_checkpoint(self, before: int, now: int) -> bool:
        """Checkpoint at the end of the episode during which a multiple of --checkpoint-every was passed."""
        return now // self.args.checkpoint_every > before // self.args.checkpoint_every

    def evaluate(self, evaluator: Evaluator, deterministic: bool) -> float:
        """Mean normalized score over --eval-episodes episodes; evaluation k has its own seeds and noise."""
        k = len(self.progress.train_log)
        noise = torch.Generator().manual_seed(stream_seed(self.args.seed, EVALUATION, 2 * k + 1))
        result = evaluator.run(lambda obs: self.sac.act(obs, deterministic, generator=noise)[0],
                               seed=stream_seed(self.args.seed, EVALUATION, 2 * k))
        return result.normalized_score

    def collect_medium(self) -> None:
        args, pr = self.args, self.progress
        bar = progress_bar(args.medium_size, len(self.medium), f"medium data {self.env_id}")

        def after_step() -> bool:
            bar.update(1)
            return len(self.medium) >= args.medium_size

        try:
            while len(self.medium) < args.medium_size:
                before = len(self.medium)
                self.run_episode(self.medium, stream_seed(args.seed, MEDIUM_EPISODES, pr.medium_episodes),
                                 self.policy_action, after_step)
                pr.medium_episodes += 1
                if len(self.medium) < args.medium_size and self.crossed_checkpoint(before, len(self.medium)):
                    self.save()
        finally:
            bar.close()
        self.write(self.medium_path, self.medium.arrays(), "medium")

    # ---------------------------------------------------------------- files
    def write(self, path: Path, arrays: dict[str, np.ndarray], level: str) -> None:
        returns = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
        scores = normalized_score(returns, *self.ref)
        pr = self.progress
        generation = {
            "generator": "D4RL recipe: SAC early-stopped at medium level (python -m tools.generate_dataset)",
            "env_id": self.env_id, "seed": self.args.seed, "target_normalized_score": self.args.target,
            "stop_step": pr.stop_step, "stop_reason": pr.stop_reason, "target_reached": pr.stop_reason == "target",
            **library_versions(), "train_log": pr.train_log, "dataset": level,
            "policy": f"tanh-gaussian {self.args.hidden}-{self.args.hidden}", "transitions": len(arrays["rewards"]),
            "episodes": len(returns), "mean_normalized_score": float(scores.mean()) if len(scores) else None,
            "std_normalized_score": float(scores.std()) if len(scores) else None,
            "config": self.data_config() | {"threads": self.args.threads},
        }
        policy = self.sac.actor.state_dict() if level == "medium" else None
        write_d4rl_hdf5(path, arrays, generation, iteration=pr.stop_step, policy=policy)
        print(f"wrote {path} ({len(arrays['rewards'])} transitions, {len(returns)} complete episodes, "
              f"normalized score {generation['mean_normalized_score']})", flush=True)

    def run(self) -> None:
        resumed = self.try_resume()
        if not resumed:
            existing = [p for p in (self.replay_path, self.medium_path) if p.exists()]
            if existing and not self.args.overwrite:
                raise SystemExit(f"{', '.join(map(str, existing))} already exist; pass --overwrite to regenerate")
        if self.progress.phase == "train":
            self.train()
        self.collect_medium()
        self.checkpoint_path.unlink(missing_ok=True)
        self.env.close()
        print(f"done in {self.elapsed() / 60:.1f} min", flush=True)


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    # In a log file (nohup) a refresh every 30 s is plenty.
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)


def episode_returns(rewards: np.ndarray, terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Returns of the episodes that ended (terminal or timeout); an unfinished last one is left out."""
    ends = np.flatnonzero(terminals | timeouts)
    sums = np.cumsum(rewards, dtype=np.float64)[ends]
    return np.diff(np.concatenate([[0.0], sums]))


def library_versions() -> dict[str, str]:
    import gymnasium
    import mujoco

    return {"gymnasium": gymnasium.__version__, "mujoco": mujoco.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "h5py": h5py.__version__}


def write_d4rl_hdf5(path: Path, arrays: dict[str, np.ndarray], generation: dict, iteration: int,
                    policy: dict[str, torch.Tensor] | None = None) -> None:
    """D4RL v2 layout, gzip-compressed, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value, compression="gzip", shuffle=True, track_times=False)
            f.create_dataset("metadata/algorithm", data="SAC")
            f.create_dataset("metadata/iteration", data=np.int64(iteration))
            f.create_dataset("metadata/generation", data=json.dumps(generation))
            for key, value in (policy or {}).items():
                f.create_dataset(f"metadata/policy/{key}", data=value.numpy(), track_times=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    Generator(args).run()


if __name__ == "__main__":
    main()
