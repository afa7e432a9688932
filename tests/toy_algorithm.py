"""A minimal extra algorithm package (plain behaviour cloning, deterministic actor), written by tests into a
temporary folder exactly as README "Add an algorithm" describes: its own folder, nothing edited elsewhere.

The tests of the shared run helpers (resume, finished-run guard, NaN guard, video) and of a third algorithm
(offline -> online -> load_agent -> plots -> a sweep trial) run it.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

NAME = "plainbc"

FILES = {
    "__init__.py": '''
        """Plain behaviour cloning: a deterministic actor regressed onto the data's actions."""
    ''',
    "networks.py": '''
        import torch
        from torch import nn


        class Actor(nn.Module):
            def __init__(self, obs_dim, act_dim, max_action, hidden_dim):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, act_dim))
                self.max_action = max_action

            def forward(self, obs):
                return self.max_action * torch.tanh(self.net(obs))
    ''',
    "agent.py": '''
        import dataclasses

        import numpy as np
        import torch

        from common.config import BaseConfig, field_names, from_dict
        from common.normalizer import ObsNormalizer
        from plainbc.networks import Actor

        ALGO = "plainbc"
        WEIGHT_METRIC = "train/exploration"  # its "regularisation weight" for the plots: the exploration noise


        @dataclasses.dataclass
        class Config(BaseConfig):
            hidden_dim: int = 16
            lr: float = 1e-3
            exploration_noise: float = 0.1
            utd: int = 2


        class BcAgent:
            def __init__(self, obs_dim, act_dim, max_action, cfg, device="cpu", normalizer=None):
                self.cfg, self.obs_dim, self.act_dim, self.max_action = cfg, obs_dim, act_dim, float(max_action)
                self.normalizer = normalizer or ObsNormalizer.identity(obs_dim)
                self.actor = Actor(obs_dim, act_dim, max_action, cfg.hidden_dim)
                self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
                self.updates = 0

            def update(self, batch):
                noise = torch.randn(()) * 1e-3  # the global torch RNG, which a resumed run must restore
                loss = ((self.actor(self.normalizer(batch.observations)) - batch.actions) ** 2).mean() + noise
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                self.updates += 1
                return {"loss": loss.item()}

            @torch.no_grad()
            def act(self, obs):
                return self.actor(self.normalizer(torch.as_tensor(obs, dtype=torch.float32))).numpy()

            def state_dict(self):
                return {"actor": self.actor.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "updates": self.updates, "normalizer": self.normalizer.state_dict(),
                        "dims": [self.obs_dim, self.act_dim, self.max_action]}

            def load_state_dict(self, state):
                self.actor.load_state_dict(state["actor"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.updates = state["updates"]
                self.normalizer = ObsNormalizer.from_state_dict(state["normalizer"])


        def agent_from_checkpoint(payload, device="cpu"):
            names = set(field_names(Config))
            cfg = from_dict(Config, {k: v for k, v in payload["config"].items() if k in names})
            obs_dim, act_dim, max_action = payload["agent"]["dims"]
            agent = BcAgent(obs_dim, act_dim, max_action, cfg, device)
            agent.load_state_dict(payload["agent"])
            return agent
    ''',
    "train_offline.py": '''
        """plainbc offline: sample -> update -> record -> evaluate -> checkpoint."""
        from common.buffer import ReplayBuffer
        from common.config import parse_config
        from common.normalizer import ObsNormalizer
        from common.run import Recorder, start_run
        from plainbc.agent import ALGO, BcAgent, Config


        def main(argv=None):
            cfg, _ = parse_config(Config, argv, description=__doc__)
            run = start_run(cfg, ALGO, "offline")
            data = run.dataset
            agent = BcAgent(data.obs_dim, data.act_dim, run.max_action, cfg, run.device,
                            ObsNormalizer.from_observations(data.observations))
            buffer = ReplayBuffer.from_dataset(data, online_capacity=0, seed=cfg.seed)
            step = run.restore(agent=agent, buffer=buffer) if run.resume else 0
            recorder = Recorder(run, total=cfg.offline_steps, start_step=step)
            try:
                while step < cfg.offline_steps:
                    recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
                    step += 1
                    recorder.advance()
                    if step % cfg.eval_every == 0 or step == cfg.offline_steps:
                        recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act)})
                    if step % cfg.checkpoint_every == 0 and step < cfg.offline_steps:
                        run.save_last(step, recorder, agent=agent, buffer=buffer)
                return run.finish(agent, step, recorder)
            finally:
                recorder.close()


        if __name__ == "__main__":
            main()
    ''',
    "train_online.py": '''
        """plainbc online: act with noise -> env step -> buffer -> updates -> evaluate -> checkpoint at episode ends."""
        import numpy as np

        from common.buffer import ReplayBuffer
        from common.config import parse_online_config
        from common.layout import online_run_dir_for, run_dir_of_checkpoint
        from common.normalizer import ObsNormalizer
        from common.run import OnlineEnv, Recorder, explore, next_checkpoint_after, start_run
        from plainbc.agent import ALGO, WEIGHT_METRIC, BcAgent, Config


        def main(argv=None):
            cfg, checkpoint, offline = parse_online_config(Config, argv, ALGO, __doc__, ("hidden_dim",))
            run = start_run(cfg, ALGO, "online", run_dir=online_run_dir_for(run_dir_of_checkpoint(checkpoint)),
                            extra_config={"offline_checkpoint": str(checkpoint.resolve()),
                                          "regularization_metric": WEIGHT_METRIC})
            data = run.dataset
            agent = BcAgent(data.obs_dim, data.act_dim, run.max_action, cfg, run.device)
            agent.load_state_dict(offline["agent"])
            buffer = ReplayBuffer.prefilled(data, 50, capacity=cfg.online_steps, seed=cfg.seed)
            noise_rng = np.random.default_rng(cfg.seed)
            env = OnlineEnv(run)
            step, next_checkpoint = 0, cfg.checkpoint_every
            if run.resume:
                step = run.restore(agent=agent, buffer=buffer)
                noise_rng.bit_generator.state = run.resume["noise_rng"]
                env.episode, next_checkpoint = run.resume["episode"], run.resume["next_checkpoint"]
            recorder = Recorder(run, total=cfg.online_steps, start_step=step)
            try:
                if not run.resume:
                    recorder.write(0, {**recorder.evaluate(agent.act), WEIGHT_METRIC: cfg.exploration_noise})
                obs = env.reset()
                while step < cfg.online_steps:
                    action = explore(agent.act(obs[None])[0], noise_rng, cfg.exploration_noise, run.max_action)
                    next_obs, reward, terminated, truncated = env.step(action)
                    buffer.add(obs, action, reward, next_obs, terminated)
                    for _ in range(cfg.utd):
                        recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
                    step += 1
                    recorder.advance()
                    if step % cfg.eval_every == 0 or step == cfg.online_steps:
                        recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act),
                                              WEIGHT_METRIC: cfg.exploration_noise})
                    if not (terminated or truncated):
                        obs = next_obs
                        continue
                    recorder.write(step, env.end_episode())
                    obs = env.reset()
                    if step >= next_checkpoint and step < cfg.online_steps:
                        next_checkpoint = next_checkpoint_after(step, cfg.checkpoint_every)
                        run.save_last(step, recorder, agent=agent, buffer=buffer,
                                      noise_rng=noise_rng.bit_generator.state, episode=env.episode,
                                      next_checkpoint=next_checkpoint)
                return run.finish(agent, step, recorder)
            finally:
                recorder.close()
                env.close()


        if __name__ == "__main__":
            main()
    ''',
}


def write_package(folder: Path) -> Path:
    """Writes the package into `folder`/plainbc and makes it importable (this process; PYTHONPATH for others)."""
    package = folder / NAME
    package.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        (package / name).write_text(textwrap.dedent(text).lstrip())
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    for module in [m for m in sys.modules if m == NAME or m.startswith(NAME + ".")]:
        del sys.modules[module]  # a package written by an earlier test in another folder
    return package
