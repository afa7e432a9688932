"""plainbc online: act with noise -> env step -> buffer -> updates -> evaluate -> checkpoint every checkpoint_every steps."""
from common.buffer import ReplayBuffer
from common.config import parse_online_config
from common.errors import cli
from common.online import start_online_run
from common.recorder import Recorder
from plainbc.agent import ALGO, WEIGHT_METRIC, BcAgent, Config


def main(argv=None):
    cfg, checkpoint, offline = parse_online_config(Config, argv, ALGO, __doc__, ("hidden_dim",))
    run = start_online_run(cfg, ALGO, checkpoint)
    data, env = run.dataset, run.env
    agent = BcAgent(data.obs_dim, data.act_dim, run.max_action, cfg, run.device)
    agent.load_state_dict(offline["agent"])
    buffer = ReplayBuffer.prefilled(data, 50, capacity=cfg.online_steps, seed=cfg.seed)
    step = run.restore(agent=agent, buffer=buffer) if run.resume else 0
    recorder = Recorder(run, total=cfg.online_steps, start_step=step)
    try:
        if not run.resume:
            recorder.write(0, {**recorder.evaluate(agent.act), WEIGHT_METRIC: cfg.exploration_noise})
        obs = env.start()
        while step < cfg.online_steps:
            action = env.explore(agent.act(obs[None])[0], cfg.exploration_noise)
            next_obs, reward, terminated, truncated = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)
            for _ in range(cfg.utd):
                recorder.add(agent.update(buffer.sample(cfg.batch_size)), step)
            step += 1
            recorder.advance()
            if step % cfg.eval_every == 0 or step == cfg.online_steps:
                recorder.write(step, {**recorder.means(), **recorder.evaluate(agent.act),
                                      WEIGHT_METRIC: cfg.exploration_noise})
            if terminated or truncated:
                recorder.write(step, env.end_episode())
                obs = env.reset()
            else:
                obs = next_obs
            if env.checkpoint_due(step):
                run.save_last(step, recorder, agent=agent, buffer=buffer)
        return run.finish(agent, step, recorder)
    finally:
        recorder.close()
        env.close()


if __name__ == "__main__":
    cli(main)
