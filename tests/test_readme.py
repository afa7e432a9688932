"""Every `python -m` command in the READMEs' code blocks names a module whose --help works, and every
image or video the READMEs link exists."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO

READMES = sorted(p for p in [REPO / "README.md", REPO / "RESULTS.md", *REPO.glob("*/README.md"),
                              *REPO.glob("data/*.md")] if ".git" not in p.parts)


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def _modules() -> list[str]:
    found = set()
    for readme in READMES:
        for block in _code_blocks(readme.read_text()):
            for line in block.splitlines():
                match = re.search(r"(?:^|\s)python -m ([\w.]+)", line.strip())
                if match and line.strip().split()[0] in ("python", "OMP_NUM_THREADS=1", "MUJOCO_GL=egl") and \
                        match.group(1) not in ("pytest", "pip", "ipykernel"):
                    found.add(match.group(1))
    return sorted(found)


def test_readmes_exist_and_have_commands():
    assert REPO / "README.md" in READMES
    assert {"adaptive_bc.train_offline", "spot.train_online"} <= set(_modules())


@pytest.mark.parametrize("module", _modules())
@pytest.mark.slow  # starts subprocesses / a kernel / the profiler
def test_module_help_works(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_linked_images_and_videos_exist(readme):
    text = readme.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)  # markdown images
    links += re.findall(r'(?:src|href)="([^"]+\.(?:png|mp4|gif|jpg|svg|webm))"', text)  # html
    links += re.findall(r"\]\(([^)\s]+\.(?:png|mp4|gif|jpg|svg|webm))\)", text)  # plain links to media
    minimum = {"README.md": 1, "RESULTS.md": 4}.get(readme.relative_to(REPO).as_posix(), 0)  # the study's curves; RESULTS also the rollouts
    assert len(links) >= minimum, f"{readme.name} links {len(links)} images/videos; the link patterns no longer match"
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        assert (readme.parent / link).is_file(), f"{readme.relative_to(REPO)} links {link}, which does not exist"


def test_truncated_study_table_matches_the_committed_runs():
    """The README's results table for the fine-tuning study is what benchmarks/results/truncated gives
    (`python -m benchmarks.quality benchmarks/results/truncated --readme`): every (method, dataset) row, its seed
    count, means and 95% intervals, so the table cannot go stale while the campaign adds seeds."""
    from benchmarks import quality
    from tools.plots import load_labeled_trials

    trials, _ = load_labeled_trials([str(REPO / "benchmarks" / "results" / "truncated")], False)
    table = quality.readme_table([quality.run_quality(t) for t in trials])
    section = (REPO / "RESULTS.md").read_text().split("## Learning: the truncated paper protocol", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert table in section, f"RESULTS.md's truncated-study table is stale; it should read:\n{table}"
    front = (REPO / "README.md").read_text().split("## Results", 1)[1].split("\n## ", 1)[0]
    assert table in front, f"README's results table is stale; it should read:\n{table}"


def test_aggregate_view_matches_the_committed_runs():
    """RESULTS.md's across-datasets table is `python -m benchmarks.quality benchmarks/results/truncated --aggregate`."""
    from benchmarks import quality
    from tools.plots import load_labeled_trials

    trials, _ = load_labeled_trials([str(REPO / "benchmarks" / "results" / "truncated")], False)
    runs, _ = quality.summary_runs([quality.run_quality(t) for t in trials])
    table = quality.aggregate_markdown(quality.aggregate_view(runs))
    assert table in (REPO / "RESULTS.md").read_text(), f"RESULTS.md's aggregate table is stale; it should read:\n{table}"
