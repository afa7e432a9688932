"""plainbc: plain behaviour cloning (a deterministic actor regressed onto the data's actions), the smallest algorithm
that keeps the contract of common/algorithm.py. The tests run it as a third algorithm: the shared run helpers
(resume, finished-run guard, NaN guard, video), and offline -> online -> load_agent -> plots -> a sweep trial."""
