"""REDQ+BC with an adaptive behaviour-cloning weight (Zhao et al. 2022, arXiv 2210.13846)."""
