"""inference.ipynb executes end to end against a tiny checkpoint made here, and is committed clean."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from conftest import REPO, write_d4rl_file

TINY = {
    "spot": ["--vae_steps", "20", "--offline_steps", "20", "--vae_hidden", "32", "--hidden_dim", "32"],
    "adaptive_bc": ["--offline_steps", "20", "--num_critics", "2", "--hidden_dim", "32"],
}


def tiny_checkpoint(algo: str, tmp_path: Path) -> Path:
    import importlib

    data = tmp_path / "tiny-hopper.hdf5"
    write_d4rl_file(data, episodes=[(60, "terminal"), (80, "timeout")], next_obs=True)
    train_offline = importlib.import_module(f"{algo}.train_offline")
    run_dir = tmp_path / "runs" / algo / "tiny" / "seed0" / "offline"
    train_offline.main(["--dataset", str(data), "--run_dir", str(run_dir), "--eval_every", "10",
                        "--eval_episodes", "1", "--batch_size", "16", "--wandb_mode", "disabled", *TINY[algo]])
    return run_dir / "checkpoints" / "offline.pt"


def test_committed_notebook_has_no_outputs_and_matches_its_generator():
    nb = nbformat.read(REPO / "inference.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    module = _generator()
    assert [c.source for c in module.build().cells] == [c.source for c in nb.cells]
    plots_nb = nbformat.read(REPO / "notebooks" / "plots.ipynb", as_version=4)
    assert [c.source for c in module.build_plots().cells] == [c.source for c in plots_nb.cells]
    assert all(c.get("outputs", []) == [] for c in plots_nb.cells)


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_plots_notebook_executes_on_the_committed_quickstart_runs(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    work = tmp_path / "work"
    work.mkdir()
    (work / "video").mkdir()
    for name in ("common", "tools"):
        os.symlink(REPO / name, work / name)
    monkeypatch.setenv("O2O_RUNS", str(REPO / "benchmarks" / "results" / "quickstart" / "*" / "online"))
    nb = nbformat.read(REPO / "notebooks" / "plots.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = str([out for cell in nb.cells for out in cell.get("outputs", [])])
    assert "2 trials: adaptive_bc, spot" in text and "| adaptive_bc |" in text and "image/png" in text
    assert (work / "video" / "curves.png").stat().st_size > 10_000

    # no runs: one clear line and no figure
    (work / "video" / "curves.png").unlink()
    monkeypatch.setenv("O2O_RUNS", str(tmp_path / "nothing" / "*"))
    nb = nbformat.read(REPO / "notebooks" / "plots.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = str([out for cell in nb.cells for out in cell.get("outputs", [])])
    assert "No finished runs found" in text and "image/png" not in text and not (work / "video" / "curves.png").exists()


@pytest.mark.slow  # starts a kernel
def test_plots_notebook_opens_the_committed_study_with_its_variants_apart(tmp_path, monkeypatch):
    """By default the plots notebook shows the committed fine-tuning study, each method and its naive twin (and the
    UTD variants) as separate curves."""
    from nbclient import NotebookClient

    work = tmp_path / "work"
    (work / "video").mkdir(parents=True)
    for name in ("common", "tools"):
        os.symlink(REPO / name, work / name)
    os.symlink(REPO / "benchmarks", work / "benchmarks")
    monkeypatch.delenv("O2O_RUNS", raising=False)
    nb = nbformat.read(REPO / "notebooks" / "plots.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = str([out for cell in nb.cells for out in cell.get("outputs", [])])
    assert "trials: adaptive_bc, adaptive_bc_naive, adaptive_bc_naive_utd10, adaptive_bc_utd10, spot, spot_naive" in text
    assert "image/png" in text


@pytest.mark.parametrize("algo", ["spot", "adaptive_bc"])
@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_inference_notebook_executes(tmp_path, monkeypatch, algo):
    from nbclient import NotebookClient

    checkpoint = tiny_checkpoint(algo, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "video").mkdir()
    for name in ("common", "adaptive_bc", "spot", "requirements.txt"):
        os.symlink(REPO / name, work / name)
    monkeypatch.setenv("O2O_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("O2O_EPISODES", "2")
    monkeypatch.setenv("O2O_VIDEO_STEPS", "20")
    nb = nbformat.read(REPO / "inference.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert f"{algo} on tiny-hopper" in text
    assert text.count("normalized score") >= 3  # two episodes and the mean
    assert "mean normalized score" in text
    videos = list((work / "video").glob("*.mp4"))
    assert [v.name for v in videos] == [f"tiny-hopper_{algo}_offline.mp4"]
    html = [out for out in nb.cells[-1].outputs if out.get("output_type") == "display_data"]
    assert html and "video" in str(html[0]["data"].get("text/html", ""))
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors == []


@pytest.mark.slow  # starts a kernel
def test_inference_notebook_opens_a_shipped_model_by_default(tmp_path, monkeypatch):
    """A new user (Colab) runs the notebook as it is: no checkpoint, no runs/; it plays the default shipped model."""
    from nbclient import NotebookClient

    work = tmp_path / "work"
    work.mkdir()
    for name in ("common", "adaptive_bc", "spot", "models", "requirements.txt"):
        os.symlink(REPO / name, work / name)
    for var in ("O2O_CHECKPOINT", "O2O_MODEL", "O2O_ALGO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("O2O_EPISODES", "1")
    monkeypatch.setenv("O2O_VIDEO_STEPS", "20")
    nb = nbformat.read(REPO / "inference.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "halfcheetah-medium-gen_adaptive_bc_online" in text.split("shipped models:")[1].splitlines()[0]
    assert "adaptive_bc on halfcheetah-medium-gen (online checkpoint, step 20000)" in text
    assert "models/halfcheetah-medium-gen_adaptive_bc_online.pt" in text
    assert [v.name for v in (work / "video").glob("*.mp4")] == ["halfcheetah-medium-gen_adaptive_bc_online.mp4"]


SLIM = ("common", "adaptive_bc", "spot", "models", "inference.ipynb", "requirements-watch.txt")


def test_requirements_watch_pins_what_requirements_pins():
    def pins(name):
        lines = (REPO / name).read_text().splitlines()
        return dict(line.split("#")[0].strip().split("==") for line in lines if "==" in line.split("#")[0])

    watch, full = pins("requirements-watch.txt"), pins("requirements.txt")
    assert watch and all(full[name] == version for name, version in watch.items())
    assert "torch" not in watch  # Colab has its own (CUDA) torch; reinstalling it would take minutes


@pytest.mark.slow  # builds a virtual environment (~1-2 min) and starts a kernel in it
def test_inference_notebook_runs_as_in_a_fresh_colab_runtime(tmp_path, monkeypatch):
    """The first cell as Colab runs it: clone REPO_URL, install requirements-watch.txt, set up rendering, then the
    default shipped model plays. The kernel runs in a venv holding only torch + requirements-watch.txt + ipykernel
    (what a Colab runtime has), with google.colab importable and no MUJOCO_GL set."""
    import json
    import shutil
    import subprocess
    import sys

    from nbclient import NotebookClient

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    torch_version = __import__("torch").__version__.split("+")[0]
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch_version}", "ipykernel",
                    "-r", str(REPO / "requirements-watch.txt")], check=True, capture_output=True)
    missing = subprocess.run([str(python), "-c", "import ray, wandb"], capture_output=True)
    assert missing.returncode != 0  # really the slim install, not requirements.txt

    # the "published" repository: the working tree's files the notebook needs, committed to a git repo
    origin = tmp_path / "origin"
    origin.mkdir()
    for name in SLIM:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, origin / name)
    for name in origin.rglob("__pycache__"):
        shutil.rmtree(name, ignore_errors=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(origin)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + args, check=True)

    # a kernel in the venv that has google.colab loaded, as Colab's kernels do
    fake = tmp_path / "fake_colab"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (fake / "google" / "__init__.py").write_text("")
    kernel_dir = tmp_path / "jupyter" / "kernels" / "colab-like"
    kernel_dir.mkdir(parents=True)
    launch = "import google.colab; from ipykernel import kernelapp; kernelapp.launch_new_instance()"
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-c", launch, "-f", "{connection_file}"], "display_name": "colab-like",
        "language": "python", "env": {"PYTHONPATH": str(fake)}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "O2O_CHECKPOINT", "O2O_MODEL", "O2O_ALGO", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("O2O_REPO_URL", str(origin))
    monkeypatch.setenv("O2O_EPISODES", "1")
    monkeypatch.setenv("O2O_VIDEO_STEPS", "20")

    content = tmp_path / "content"  # Colab's working folder
    content.mkdir()
    nb = nbformat.read(REPO / "inference.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="colab-like", resources={"metadata": {"path": str(content)}}).execute()
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert errors == []
    text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "rendering with MUJOCO_GL = egl" in text
    assert "adaptive_bc on halfcheetah-medium-gen (online checkpoint, step 20000)" in text
    assert "mean normalized score" in text
    clone = content / "offline-to-online"
    assert [v.name for v in (clone / "video").glob("*.mp4")] == ["halfcheetah-medium-gen_adaptive_bc_online.mp4"]
    html = [out for out in nb.cells[-1].outputs if out.get("output_type") == "display_data"]
    assert html and "video" in str(html[0]["data"].get("text/html", ""))
