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
    assert [v.name for v in videos] == [f"{algo}_tiny-hopper.mp4"]
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
    assert [v.name for v in (work / "video").glob("*.mp4")] == ["adaptive_bc_halfcheetah-medium-gen.mp4"]
