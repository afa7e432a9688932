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


def _study_runs():
    """The committed study's runs, one summary per (variant, dataset, seed), as the tables are built from them."""
    from benchmarks import quality
    from tools.plots import load_labeled_trials

    trials, _ = load_labeled_trials([str(REPO / "benchmarks" / "results" / "truncated")], False)
    runs, _ = quality.summary_runs([quality.run_quality(t) for t in trials])
    return runs


def test_aggregate_view_matches_the_committed_runs():
    """RESULTS.md's across-datasets table is `python -m benchmarks.quality benchmarks/results/truncated --aggregate`."""
    from benchmarks import quality

    table = quality.aggregate_markdown(quality.aggregate_view(_study_runs()))
    assert table in (REPO / "RESULTS.md").read_text(), f"RESULTS.md's aggregate table is stale; it should read:\n{table}"


FALL = 30.0  # "falls by 30+ points": dip − offline or lowest − offline at or below −30
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


def _check_fall_counts(name: str, reading: str, naive_pattern: str, regularised_pattern: str) -> None:
    from common.layout import dataset_label

    reading = re.sub(r"\s+", " ", reading)
    runs = _study_runs()
    by_key = {(r.algo, dataset_label(r.dataset), r.seed): r for r in runs}

    naive = re.search(naive_pattern, reading)
    assert naive, f"{name}'s reading no longer names the datasets where naive fine-tuning collapses, with counts"
    sets = [f"{s.strip()}-gen" for s in re.split(r",| and ", naive["sets"]) if s.strip()]
    assert NUMBER_WORDS[len(sets)] == naive["word"], f"{name} says {naive['word']} datasets and names {len(sets)}"
    twins = [r for r in runs if r.algo.endswith("_naive") and dataset_label(r.dataset) in sets
             and r.dip_drop is not None]
    fallen = [r for r in twins if r.dip_drop <= -FALL]
    assert (int(naive["k"]), int(naive["n"])) == (len(fallen), len(twins)), \
        f"{name} says {naive['k']} of {naive['n']} naive runs fall 30+; the runs: {len(fallen)} of {len(twins)}"
    for r in fallen:  # "both regularisers cut that fall"
        method = by_key[(r.algo.removesuffix("_naive"), dataset_label(r.dataset), r.seed)]
        assert method.dip_drop > r.dip_drop, (f"{method.algo} {dataset_label(r.dataset)} seed {r.seed} falls "
                                              f"{method.dip_drop:.1f}, not less than its twin's {r.dip_drop:.1f}")

    regularised = re.search(regularised_pattern, reading)
    assert regularised, f"{name}'s reading no longer counts the regularised runs that fall 30+ points"
    methods = [r for r in runs if r.algo in ("adaptive_bc", "spot") and r.low_drop is not None]
    low = [r for r in methods if r.low_drop <= -FALL]
    assert (int(regularised[1]), int(regularised[2])) == (len(low), len(methods)), \
        (f"{name} says {regularised[1]} of {regularised[2]} regularised runs fall 30+; "
         f"the runs: {len(low)} of {len(methods)}")


def test_the_readings_count_the_falls_the_committed_runs_show():
    """The counts the README's and RESULTS.md's readings quote (N of M naive runs on the named datasets fall by 30+
    points within 4k steps, and the regularised run of the same seed falls less each time; N of M regularised runs
    fall 30+ points at some point) are what the committed runs give: dip − offline (the lowest evaluation in the
    first 20% of the online budget) and lowest − offline."""
    readme = (REPO / "README.md").read_text().split("**The answer**", 1)[1].split("\n## ", 1)[0]
    _check_fall_counts("README", readme,
                       r"collapses early on (?P<word>\w+) of the six datasets \((?P<sets>[^:]+): (?P<k>\d+) of "
                       r"(?P<n>\d+) naive runs there fall by 30\+ points within 4k steps\)",
                       r"(\d+) of (\d+) regularised runs fall 30\+ points")
    results = (REPO / "RESULTS.md").read_text().split("**In short**", 1)[1].split("\n## ", 1)[0]
    _check_fall_counts("RESULTS.md", results,
                       r"collapses early on (?P<word>\w+) of the six sets: (?P<k>\d+) of the (?P<n>\d+) naive runs "
                       r"on (?P<sets>[^.]+?) fall by 30 points or more in their first 4k steps",
                       r"(\d+) of the (\d+) regularised runs fall by 30 points or more")


def test_the_offline_start_count_is_what_the_committed_runs_show():
    """RESULTS.md's "N of the M [offline policies fine-tuned] end below 80 % of their data's score, K of those
    after being above it earlier" counts the committed offline runs that a fine-tuning run starts from, against the
    data scores of data/DATASETS.md."""
    import json

    rows = re.findall(r"^\| (\S+)\.hdf5 \| [^|]+\| [^|]+\| ([\d.]+) ±", (REPO / "data" / "DATASETS.md").read_text(),
                      flags=re.M)
    data_score = {name: float(score) for name, score in rows}
    assert len(data_score) >= 7, \
        f"data/DATASETS.md's table lists {len(data_score)} datasets; the pattern no longer matches"
    started = below = above_before = 0
    for algo in ("adaptive_bc", "spot"):
        runs = REPO / "benchmarks" / "results" / "truncated" / algo
        for metrics in sorted(runs.glob("*/seed*/offline/metrics.jsonl")):
            if not (metrics.parent.parent / "online" / "metrics.jsonl").is_file():
                continue  # nothing was fine-tuned from it (SPOT's diverged walker2d-medium)
            scores = [r["eval/normalized_score"] for r in map(json.loads, metrics.read_text().splitlines())
                      if "eval/normalized_score" in r]
            target = 0.8 * data_score[metrics.parent.parent.parent.name]
            started += 1
            if scores[-1] < target:
                below += 1
                above_before += max(scores[:-1], default=scores[-1]) >= target
    reading = re.sub(r"\s+", " ", (REPO / "RESULTS.md").read_text())
    said = re.search(r"(\d+) of the (\d+) end below 80 % of their data's score, (\d+) of those after being "
                     r"above it earlier", reading)
    assert said, "RESULTS.md no longer counts the offline policies that end below 80 % of their data's score"
    assert tuple(map(int, said.groups())) == (below, started, above_before), \
        f"RESULTS.md says {said.groups()}; the committed runs: {below} of {started}, {above_before} above it earlier"
