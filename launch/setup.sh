#!/usr/bin/env bash
# Installs everything vitrain needs on a fresh Debian 12 (or Ubuntu 24.04) machine and builds it.
# Idempotent: packages already there are not reinstalled, the Python environment is reused.
#
#   Debian packages: compiler, CMake, Ninja, ccache, Open MPI, yaml-cpp, Boost.Program_options,
#                    libjpeg-turbo, OpenSSL (libcrypto), libzip, nlohmann-json, GoogleTest, python3-venv
#   LibTorch:        PyPI's torch==2.11.0 (the GPU machines' version) in a virtual environment
#                    outside the clone, $VITRAIN_VENV (default ~/.cache/vitrain/venv), shared by
#                    every clone; timm, safetensors, tensorboard, pytest for the tests. PyPI's
#                    wheel is the CUDA 13.0 build, whose CMake files need the CUDA toolkit (nvcc);
#                    on a machine without one, the CPU build from download.pytorch.org instead.
#   Build:           build/ (Release, Ninja); vit-train ends up at build/vit-train
#   --test (launch/test.sh): also what the cluster tests run, without starting their services:
#                    SLURM (slurmctld, slurmd, client), munge, sshd. The tests start private copies
#                    of their own as root (tests/launch/); skipped, they say why.
#
# Use an existing LibTorch instead: VITRAIN_TORCH_PREFIX=/path/to/libtorch launch/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
test_tools=false
if [ "${1:-}" = "--test" ]; then test_tools=true; fi

VENV=${VITRAIN_VENV:-$HOME/.cache/vitrain/venv}
BUILD_DIR=${VITRAIN_BUILD_DIR:-build}
TORCH_VERSION=2.11.0
NVJPEG_VERSION=13.3.2.43  # PyPI nvidia-nvjpeg (CUDA 13): tested on H200 with driver 580
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
have_cuda_toolkit() { command -v nvcc >/dev/null 2>&1 || [ -x "${CUDAToolkit_ROOT:-/usr/local/cuda}/bin/nvcc" ]; }

packages=(build-essential cmake ninja-build ccache pkg-config libopenmpi-dev openmpi-bin libyaml-cpp-dev
          libboost-program-options-dev libjpeg-dev libssl-dev libzip-dev nlohmann-json3-dev libgtest-dev libgmock-dev python3 python3-venv python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "setup: not root and no sudo: install these packages as root, then rerun" >&2; exit 2
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# The cluster tests' tools: installed, not started (a policy-rc.d that refuses while apt runs,
# where none exists) and not enabled at boot.
if $test_tools; then
  tools=(slurmctld slurmd slurm-client munge openssh-server)
  missing=()
  for p in "${tools[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ] && { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
    echo "setup: installing the cluster tests' tools (services not started): ${missing[*]}"
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
    fi
    status=0
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
      "${missing[@]}" || status=$?
    if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
    if [ -d /run/systemd/system ]; then $SUDO systemctl disable -q ssh slurmctld slurmd munge 2>/dev/null || true; fi
    [ $status = 0 ] || echo "setup: could not install ${missing[*]}: the cluster tests will skip" >&2
  fi
fi

if [ -z "${VITRAIN_TORCH_PREFIX:-}" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating the Python environment $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c "import torch, timm, safetensors, tensorboard, pytest, PIL, numpy
assert torch.__version__.split('+')[0] == '$TORCH_VERSION'" >/dev/null 2>&1; then
    echo "setup: installing torch==$TORCH_VERSION (LibTorch), timm, safetensors, tensorboard, pytest into $VENV" \
      "(a few GB with the CUDA build: 5-15 minutes; pip names each package as it comes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    if ! have_cuda_toolkit; then
      echo "setup: no CUDA toolkit (nvcc) here: installing the CPU build of torch (download.pytorch.org)"
      "$VENV/bin/python" -m pip install --progress-bar off "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu || {
        echo "setup: could not reach download.pytorch.org; install the CUDA 13.0 toolkit (nvcc) and rerun" >&2; exit 1; }
    fi
    "$VENV/bin/python" -m pip install --progress-bar off "torch==$TORCH_VERSION" timm safetensors tensorboard pytest numpy pillow
  fi
  if ! have_cuda_toolkit && [ "$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda is not None)')" = True ]; then
    echo "setup: $VENV holds a CUDA build of torch, whose CMake files need the CUDA toolkit (nvcc), and this" \
         "machine has none: install the CUDA 13.0 toolkit, or set VITRAIN_VENV to a new path for the CPU build" >&2
    exit 2
  fi
  # nvJPEG for JPEG decode on the GPU (data.decode; a small wheel: header + libnvjpeg.so.13).
  if [ "$("$VENV/bin/python" -c 'import torch; print(torch.version.cuda is not None)')" = True ] &&
     ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('nvidia-nvjpeg') == '$NVJPEG_VERSION'" \
       >/dev/null 2>&1; then
    echo "setup: installing nvidia-nvjpeg==$NVJPEG_VERSION (GPU JPEG decode) into $VENV"
    "$VENV/bin/python" -m pip install --progress-bar off "nvidia-nvjpeg==$NVJPEG_VERSION"
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
