"""Which OpenGL MuJoCo renders offscreen with: EGL where it works (a GPU driver, or Mesa's), else OSMesa (CPU).

MuJoCo and PyOpenGL fix their backend when first used in a process, so the choice is made by rendering one
frame in a child process per candidate, before this process touches OpenGL. `MUJOCO_GL` set by the user wins.
"""
from __future__ import annotations

import os
import subprocess
import sys

CANDIDATES = ("egl", "osmesa")
INSTALL_HINT = ("install a renderer: `apt-get install libegl1` (EGL: GPU driver or Mesa) or "
                "`apt-get install libosmesa6` (OSMesa, CPU), or set MUJOCO_GL to one that works")

_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
with mujoco.Renderer(model, 8, 8) as renderer:
    renderer.update_scene(mujoco.MjData(model))
    assert renderer.render().shape == (8, 8, 3)
"""


def works(backend: str, env: dict | None = None, timeout: float = 60.0) -> bool:
    """True when a fresh process renders a frame with MUJOCO_GL=backend."""
    env = dict(os.environ if env is None else env, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def choose_gl_backend(candidates: tuple[str, ...] = CANDIDATES, env: dict | None = None) -> str:
    """Sets MUJOCO_GL (and PyOpenGL's PYOPENGL_PLATFORM) to the first candidate that renders, returns it.

    Keeps a MUJOCO_GL that is already set, and changes nothing once this process has loaded PyOpenGL (too late
    to switch; MuJoCo's default, EGL, is assumed). Raises RuntimeError, one line, when none renders."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if "OpenGL" in sys.modules:
        os.environ["MUJOCO_GL"] = candidates[0]
        return candidates[0]
    for backend in candidates:
        if works(backend, env):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    raise RuntimeError(f"MuJoCo cannot render offscreen here (tried MUJOCO_GL={', '.join(candidates)}): "
                       f"{INSTALL_HINT}")
