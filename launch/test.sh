#!/usr/bin/env bash
# README command 2: set up (idempotent), build, and run every test suite on this machine.
# GPU tests skip with a reason when there is no GPU; MPI tests run under mpirun -np 2/3.
set -euo pipefail
cd "$(dirname "$0")/.."
# mpirun refuses root unless told; CI and containers run as root.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
start=$(date +%s)
bash launch/setup.sh
built=$(date +%s)
echo "setup + build: $((built - start)) s"
cd "${VITRAIN_BUILD_DIR:-build}"
ctest --output-on-failure -j2 --timeout 900 "$@"
echo "tests: $(( $(date +%s) - built )) s; total: $(( $(date +%s) - start )) s"
