"""Plain reference implementations of each algorithm's update, written from the papers' equations and the
algorithm READMEs, never from the optimized code. Test code only: nothing outside tests/ imports it."""
