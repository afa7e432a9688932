"""Export a trained policy as a small inference-only model file (for models/ and inference.ipynb).

  python -m tools.export_model runs/.../online/checkpoints/online.pt models/NAME.pt --budget "100k offline + 20k online"
  python -m tools.export_model --add-probe models/*.pt      # (re)write the probe of existing model files

The file holds the actor and its observation normalizer, env id, dataset, config, the budget and the run's final
evaluation score (from the run folder's metrics.jsonl, or --score) and a probe: observations one episode of the
policy visits and its actions on them, which tests/test_shipped_models.py checks on any machine;
`common.inference.load_agent` loads it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import layout
from common.errors import cli
from common.inference import add_probe, export_policy

SCORE = "eval/normalized_score"


def final_score(checkpoint: Path) -> float | None:
    run_dir = layout.run_dir_of_checkpoint(checkpoint)
    if not layout.is_run_dir(run_dir):
        return None
    scores = [r[SCORE] for r in layout.read_metrics(run_dir) if SCORE in r]
    return float(scores[-1]) if scores else None


def main(argv=None) -> Path | list[Path]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--add-probe"]:
        models = [Path(a) for a in argv[1:]]
        if not models:
            raise SystemExit("usage: python -m tools.export_model --add-probe MODEL.pt [MODEL.pt ...]")
        for model in models:
            add_probe(model)
            print(f"wrote the probe of {model}")
        return models
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an offline.pt / online.pt of a run")
    parser.add_argument("out", type=Path, help="the model file to write (e.g. models/<name>.pt)")
    parser.add_argument("--budget", required=True, help="the training budget, in words")
    parser.add_argument("--score", type=float, help="default: the run's final evaluation (normalized ×100)")
    args = parser.parse_args(argv)
    score = args.score if args.score is not None else final_score(args.checkpoint)
    path = export_policy(args.checkpoint, args.out, args.budget, score)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, score {score})")
    return path


if __name__ == "__main__":
    cli(main)
