#!/usr/bin/env bash
# README command 2: set up (idempotent), build, and run every test suite on this machine.
# GPU tests skip with a reason when there is no GPU; MPI tests run under mpirun -np 2/3.
set -euo pipefail
cd "$(dirname "$0")/.."
# mpirun refuses root unless told; CI and containers run as root.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
start=$(date +%s)
bash launch/setup.sh --test
built=$(date +%s)
echo "setup + build: $((built - start)) s"
cd "${VITRAIN_BUILD_DIR:-build}"
status=0
ctest --output-on-failure -j2 --timeout 900 "$@" || status=$?
# ctest counts skips but keeps their output to itself: say why each one skipped (GoogleTest's
# "Skipped" line, pytest -rs's "SKIPPED [n] ...", the fault tests' "SKIP:").
if [ -f Testing/Temporary/LastTest.log ]; then
  awk '/^[0-9]+\/[0-9]+ Testing: / { name = $3 }
       /: Skipped$/ { getline reason; why = reason }
       /^SKIPPED \[/ { why = $0; sub(/^SKIPPED \[[0-9]+\] /, "", why) }
       /SKIP: / { why = $0; sub(/.*SKIP: /, "", why) }
       why != "" { key = name ": " why; if (!(key in seen)) { seen[key] = 1; print "  skipped: " key } why = "" }
      ' Testing/Temporary/LastTest.log | sort -u | { IFS= read -r first && { echo "Why tests skipped:"; echo "$first"; cat; } || true; }
fi
echo "tests: $(( $(date +%s) - built )) s; total: $(( $(date +%s) - start )) s"
exit $status
