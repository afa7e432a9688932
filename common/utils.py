"""Seeding, device and thread settings, shared by every script."""
from __future__ import annotations

import ctypes
import functools
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy's global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """torch CPU threads. Several processes each using all cores slow each other down badly."""
    torch.set_num_threads(int(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    reuse_freed_memory()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Loading an optimizer's state also loads the lr it was saved with; this puts the configured one back."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def torch_rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_torch_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@functools.cache
def reuse_freed_memory() -> bool:
    """Keeps freed memory in the process (glibc) instead of handing it back to the OS.

    Each update allocates and frees tens of MB of activations and gradients; by default glibc returns
    those blocks to the OS and the next update page-faults them back in (~3,000 faults per update at
    batch 256, ~10% of its CPU time). Process-wide; a no-op where glibc is not the allocator.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 256 << 20))


def _prepare_compile(device: torch.device) -> str | None:
    """Inductor's global options for our updates; returns the torch.compile mode for `device`.

    - Random ops inside compiled code keep drawing from torch's generator (fallback_random), so a compiled run has
      the eager run's random stream (SPOT's dropout masks, its VAE's noise).
    - On a CPU, the backward reads the activations the forward computed (AOTAutograd's default partition) instead
      of inductor's min-cut choice, which saves each ReLU's mask as a bool tensor: inductor's C++ kernels (torch
      2.13) store and load bool vectors slowly, ~17x eager's relu-with-mask (2.9 ms vs 0.17 ms for a 256x750 one on
      our AVX-512 CPU), which made every compiled update slower than eager. GPUs keep the min-cut partitioner.
    - On CUDA, mode="reduce-overhead" (CUDA graphs), which the updates allow since they never read the device."""
    import torch._inductor.config as inductor_config

    device = torch.device(device)
    inductor_config.fallback_random = True
    if device.type == "cpu":
        from common.compile import SavedActivations

        inductor_config.custom_partitioner_fn = SavedActivations()
    return "reduce-overhead" if device.type == "cuda" else None


def compile_in_place(modules, device: torch.device) -> None:
    """torch.compile each module's forward in place (its state_dict keys stay as they are, so checkpoints are the
    same either way); options as `_prepare_compile`."""
    mode = _prepare_compile(device)
    for module in modules:
        module.compile(mode=mode)


def compiled(fn, device: torch.device):
    """torch.compile of a loss function (forward and backward of the whole loss fused where inductor can), with
    the options of `_prepare_compile`."""
    return torch.compile(fn, mode=_prepare_compile(device))
