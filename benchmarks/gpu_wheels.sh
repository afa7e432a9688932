#!/usr/bin/env bash
# The Python packages the lent GPU machine lacks (its image has torch, numpy, h5py, PyYAML, tqdm, imageio, not
# gymnasium or mujoco), as wheels for its Python 3.12, into .whl/ (ignored by git). A device run carries them:
#   carry [".whl"], command: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; MUJOCO_GL=egl python3 -m benchmarks.gpu_check ...
# (benchmarks/gpu_check.py's docstring has the whole command). Versions: requirements.txt's, and what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 -d .whl \
  gymnasium==1.4.0 farama-notifications==0.0.6 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 \
  glfw==2.11.0 pyopengl==3.1.10 websockets==17.4
ls .whl
