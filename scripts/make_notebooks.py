"""Writes inference.ipynb and notebooks/plots.ipynb (kept as code so the notebooks stay reviewable and
free of stale outputs).

    python scripts/make_notebooks.py
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Watch a trained policy\n\n"
        "Loads a shipped model (`models/`) or any adaptive_bc or spot checkpoint through the code the training scripts "
        "use (observation normalization included), rolls out deterministic episodes, prints returns and D4RL "
        "normalized scores, and renders one episode to `video/<dataset>_<algo>_<phase>.mp4`.\n\n"
        "**Colab**: set `REPO_URL` in the first cell to this repository's git URL (or upload the repository), then "
        "*Run all*. The first cell clones it, installs only what watching needs (`requirements-watch.txt`; Colab has "
        "torch) and sets up offscreen rendering: EGL through the GPU driver on a GPU runtime, else OSMesa on the CPU. "
        "Locally (`pip install -r requirements.txt`) the first cell only finds the repository root."),
    new_code_cell(
        "REPO_URL = ''  # Colab: this repository's git URL, e.g. 'https://github.com/<owner>/<repo>.git'\n"
        "import os, subprocess, sys\n"
        "REPO_URL = os.environ.get('O2O_REPO_URL', REPO_URL)\n"
        "if 'google.colab' in sys.modules:\n"
        "    if not os.path.exists('requirements-watch.txt'):\n"
        "        if not os.path.exists('offline-to-online'):\n"
        "            if not REPO_URL:\n"
        "                raise SystemExit('Set REPO_URL in this cell to the repository git URL (or upload the repository), then rerun')\n"
        "            subprocess.run(['git', 'clone', '--depth', '1', REPO_URL, 'offline-to-online'], check=True)\n"
        "        os.chdir('offline-to-online')\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-r', 'requirements-watch.txt'], check=True)\n"
        "    # offscreen OpenGL the way MuJoCo's own Colab notebooks set it up: NVIDIA's EGL on a GPU runtime ...\n"
        "    import shutil\n"
        "    if shutil.which('nvidia-smi') and subprocess.run(['nvidia-smi'], capture_output=True).returncode == 0:\n"
        "        vendor = '/usr/share/glvnd/egl_vendor.d/10_nvidia.json'\n"
        "        if not os.path.exists(vendor):\n"
        "            with open(vendor, 'w') as f:\n"
        "                f.write('{\"file_format_version\": \"1.0.0\", \"ICD\": {\"library_path\": \"libEGL_nvidia.so.0\"}}')\n"
        "    # ... and the system libraries (OSMesa: the CPU fallback), installed once\n"
        "    import ctypes.util\n"
        "    if not (ctypes.util.find_library('EGL') and ctypes.util.find_library('OSMesa')):\n"
        "        subprocess.run('apt-get update -qq && apt-get install -y -qq libegl1 libosmesa6 > /dev/null', shell=True)\n"
        "elif not os.path.exists('common') and os.path.exists('../common'):\n"
        "    os.chdir('..')  # opened from a subfolder\n"
        "sys.path.insert(0, os.getcwd())\n"
        "from common.gl import choose_gl_backend\n"
        "print('rendering with MUJOCO_GL =', choose_gl_backend())"),
    new_code_cell(
        "# What to load: a shipped model by name (models/<dataset>_<algo>_<phase>.pt, no training needed), or a\n"
        "# checkpoint path (any run's offline.pt / online.pt), or the newest under runs/ (of ALGO if set).\n"
        "MODEL = os.environ.get('O2O_MODEL') or 'halfcheetah-medium-gen_adaptive_bc_online'\n"
        "CHECKPOINT = os.environ.get('O2O_CHECKPOINT') or None\n"
        "ALGO = os.environ.get('O2O_ALGO') or None          # 'adaptive_bc', 'spot' or None\n"
        "EPISODES = int(os.environ.get('O2O_EPISODES', 5))\n"
        "VIDEO_STEPS = int(os.environ.get('O2O_VIDEO_STEPS', 1000))\n"
        "SEED = 0"),
    new_code_cell(
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from common.inference import load_agent, newest_checkpoint\n"
        "from common.evaluation import evaluate\n\n"
        "shipped = sorted(p.stem for p in Path('models').glob('*.pt'))\n"
        "print('shipped models:', ', '.join(shipped) or 'none yet')\n"
        "if CHECKPOINT:\n"
        "    checkpoint = Path(CHECKPOINT)\n"
        "elif (Path('models') / f'{MODEL}.pt').is_file():\n"
        "    checkpoint = Path('models') / f'{MODEL}.pt'\n"
        "else:\n"
        "    checkpoint = newest_checkpoint('runs', ALGO)\n"
        "agent, info = load_agent(checkpoint)\n"
        "print(f\"{info['algo']} on {info['dataset']} ({info['phase']} checkpoint, step {info['step']}) -> {info['env_id']}\")\n"
        "print(checkpoint)"),
    new_code_cell(
        "result = evaluate(agent.act, info['env_id'], episodes=EPISODES, seed=SEED)\n"
        "for i, (ret, score, length) in enumerate(zip(result.returns, result.normalized_scores, result.lengths)):\n"
        "    print(f'episode {i}: return {ret:8.1f}   normalized score {score:6.1f}   length {length}')\n"
        "print(f'mean normalized score {result.normalized_score:.1f} ± {result.normalized_score_std:.1f}')"),
    new_code_cell(
        "from IPython.display import Video, display\n"
        "from common.video import render_episode\n\n"
        "dataset = Path(str(info['dataset'])).stem.replace('/', '_').replace(':', '_')\n"
        "video_path = Path('video') / f\"{dataset}_{info['algo']}_{info['phase']}.mp4\"  # a shipped model's own name\n"
        "label = f\"{info['algo']} {info['phase']} (step {info['step']})\\n{dataset}\"\n"
        "episode = render_episode(agent.act, info['env_id'], video_path, seed=SEED, max_steps=VIDEO_STEPS, label=label)\n"
        "print(f\"{video_path}: return {episode['return']:.1f}, {episode['length']} steps\")\n"
        "display(Video(str(video_path), embed=True, width=480))"),
]


PLOT_CELLS = [
    new_markdown_cell(
        "# Learning curves and results table\n\n"
        "Offline then online normalized scores on one step axis (switch dashed), mean and 95% bootstrap "
        "band over seeds, with each algorithm's regularisation weight (adaptive_bc's α, spot's λ) underneath; then the final (not best) "
        "evaluation of each phase per algorithm and dataset. Uses `tools.plots`, the same code as "
        "`python -m tools.plots`."),
    new_code_cell(
        "import glob, os, sys\n"
        "if not os.path.exists('common') and os.path.exists('../common'):\n"
        "    os.chdir('..')  # run from the repository root\n"
        "sys.path.insert(0, os.getcwd())\n"
        "from tools import plots\n\n"
        "# Default: the committed fine-tuning study (a sweep root: its folders name the variants, so a method and\n"
        "# its naive twin are separate curves). Yours: O2O_RUNS='runs/**/online' (a glob of run folders) or a sweep root.\n"
        "SOURCE = os.environ.get('O2O_RUNS', 'benchmarks/results/truncated')\n"
        "paths = sorted(glob.glob(SOURCE, recursive=True))\n"
        "trials, notes = plots.load_labeled_trials(paths) if paths else ([], [])\n"
        "if trials:\n"
        "    print(len(trials), 'trials:', ', '.join(sorted({t.algo for t in trials})))\n"
        "else:\n"
        "    print(f'No finished runs found for {SOURCE!r}: train one (README, Quickstart) or set O2O_RUNS to your '\n"
        "          'run folders, e.g. runs/**/online.')"),
    new_code_cell(
        "from IPython.display import Image, Markdown, display\n\n"
        "if trials:\n"
        "    plots.plot(trials, 'video/curves.png')\n"
        "    display(Image('video/curves.png'))\n"
        "    display(Markdown(plots.results_table(trials)))"),
]


def _stable_ids(nb: nbformat.NotebookNode, ids: list[str] | None = None) -> nbformat.NotebookNode:
    """Cell ids that do not change on every regeneration (nbformat draws random ones)."""
    for i, cell in enumerate(nb.cells):
        cell.id = ids[i] if ids and i < len(ids) else f"cell-{i}"
    return nb


def build_plots() -> nbformat.NotebookNode:
    nb = new_notebook(cells=PLOT_CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return _stable_ids(nb, ["1f61c758", "93f34de1", "fd615764"])


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["colab"] = {"provenance": []}
    return _stable_ids(nb)


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for notebook, path in ((build(), root / "inference.ipynb"), (build_plots(), root / "notebooks" / "plots.ipynb")):
        path.parent.mkdir(exist_ok=True)
        nbformat.write(notebook, path)
        print(f"wrote {path}")
