"""plainbc offline: sample -> update -> record -> evaluate -> checkpoint."""
from common.buffer import ReplayBuffer
from common.config import parse_config
from common.errors import cli
from common.normalizer import ObsNormalizer
from common.recorder import Recorder
from common.run import start_run
from plainbc.agent import ALGO, BcAgent, Config


def main(argv=None):
    cfg, _ = parse_config(Config, argv, description=__doc__)
    run = start_run(cfg, ALGO, "offline")
    data = run.dataset
    agent = BcAgent(data.obs_dim, data.act_dim, run.max_action, cfg, run.device,
                    ObsNormalizer.for_dataset(data, True, run.device))
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
    cli(main)
