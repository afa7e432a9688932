"""common.gl picks an offscreen OpenGL that renders: EGL where it starts, else OSMesa; a clear line when none does."""
from __future__ import annotations

import sys

import pytest

from common import gl

BROKEN_EGL = {"__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/egl_vendor.json"}  # glvnd then finds no EGL driver


@pytest.fixture
def fresh_process_state(monkeypatch):
    """As in a new kernel: no MUJOCO_GL chosen, PyOpenGL not loaded (restored after the test)."""
    for var in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delitem(sys.modules, "OpenGL", raising=False)
    return monkeypatch


def test_egl_is_chosen_where_it_renders(fresh_process_state):
    import os

    assert gl.works("egl") and gl.works("osmesa")  # this machine has both (CI installs libegl1 and libosmesa6)
    assert gl.choose_gl_backend() == "egl" and os.environ["MUJOCO_GL"] == "egl"


def test_osmesa_is_the_fallback_when_egl_cannot_start(fresh_process_state):
    import os

    for var, value in BROKEN_EGL.items():
        fresh_process_state.setenv(var, value)
    assert not gl.works("egl")
    assert gl.choose_gl_backend() == "osmesa"
    assert os.environ["MUJOCO_GL"] == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_no_renderer_is_one_line_that_says_what_to_install(fresh_process_state):
    for var, value in BROKEN_EGL.items():
        fresh_process_state.setenv(var, value)
    with pytest.raises(RuntimeError, match="apt-get install libegl1") as error:
        gl.choose_gl_backend(candidates=("egl",))
    assert "\n" not in str(error.value)


def test_a_backend_the_user_set_is_kept(fresh_process_state):
    fresh_process_state.setenv("MUJOCO_GL", "osmesa")
    assert gl.choose_gl_backend() == "osmesa"
