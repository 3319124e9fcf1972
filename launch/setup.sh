#!/usr/bin/env bash
# Installs everything vitrain needs on a fresh Debian 12 (or Ubuntu) machine and builds it.
# Idempotent: packages already there are not reinstalled, the Python environment is reused.
#
#   Debian packages: compiler, CMake, Ninja, ccache, Open MPI, yaml-cpp, Boost.Program_options,
#                    libjpeg-turbo, GoogleTest, python3-venv
#   LibTorch:        PyPI's torch==2.11.0 (the GPU machines' version) in a virtual environment
#                    outside the clone, $VITRAIN_VENV (default ~/.cache/vitrain/venv), shared by
#                    every clone; timm, safetensors, tensorboard, pytest for the tests
#   Build:           build/ (Release, Ninja); vit-train ends up at build/vit-train
#
# Use an existing LibTorch instead: VITRAIN_TORCH_PREFIX=/path/to/libtorch launch/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VITRAIN_VENV:-$HOME/.cache/vitrain/venv}
BUILD_DIR=${VITRAIN_BUILD_DIR:-build}
TORCH_VERSION=2.11.0
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

packages=(build-essential cmake ninja-build ccache pkg-config libopenmpi-dev openmpi-bin libyaml-cpp-dev
          libboost-program-options-dev libjpeg-dev libgtest-dev libgmock-dev python3 python3-venv python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ -z "${VITRAIN_TORCH_PREFIX:-}" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the Python environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch, timm, safetensors, tensorboard, pytest, PIL, numpy
assert torch.__version__.split('+')[0] == '$TORCH_VERSION'" >/dev/null 2>&1; then
    echo "setup: installing torch==$TORCH_VERSION (LibTorch), timm, safetensors, tensorboard, pytest into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" timm safetensors tensorboard pytest numpy pillow
  fi
  TORCH_PREFIX=$("$VENV/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  PYTHON="$VENV/bin/python"
else
  TORCH_PREFIX=$VITRAIN_TORCH_PREFIX
  PYTHON=$(command -v python3)
fi

# ccache across clones: paths relative to the source root, and precompiled headers allowed.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
      -DVIT_PYTHON="$PYTHON" ${VITRAIN_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR"
