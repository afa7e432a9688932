"""SPOT: Supported Policy Optimization (Wu et al. 2022), offline pretraining and online fine-tuning."""
