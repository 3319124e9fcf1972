#!/usr/bin/env bash
# A failure test: runs fault_main under mpirun and checks that the whole job ends non-zero,
# within timeout_s + 10 s, and that the output names the failing rank.
#   kill: rank 1 SIGKILLs itself; mpirun must tear the job down and name rank 1.
#   hang: rank 1 sleeps before a collective; the other ranks' collective times out after
#         timeout_s, they name the operation, themselves and the hung rank 1 (Note [Naming a
#         hung peer]) and abort the job (MPI_Abort).
#   DEVICE cuda: the same on GPUs with NCCL (the watchdog aborts); exit 77 (skip) without GPUs.
# Usage: fault_test.sh MPIEXEC EXE NP MODE TIMEOUT_S [cpu|cuda]
set -u
mpiexec=$1 exe=$2 np=$3 mode=$4 timeout_s=$5 device=${6:-cpu}
limit=$((timeout_s + 10))
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
# A hard outer limit so a broken build fails the test instead of hanging CI.
timeout -s KILL $((limit + 30)) "$mpiexec" --allow-run-as-root --oversubscribe -np "$np" \
  "$exe" "$mode" "$timeout_s" "$device" >"$log" 2>&1
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed="$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))"
cat "$log"
echo "---- fault_test: mode=$mode np=$np rc=$rc elapsed=${elapsed}s (limit ${limit}s)"
fail() { echo "FAIL: $*"; exit 1; }
if [ "$rc" -eq 77 ] && grep -q "SKIP:" "$log"; then exit 77; fi
[ "$rc" -ne 0 ] || fail "the job exited 0"
[ "$elapsed_ms" -lt $((limit * 1000)) ] || fail "took ${elapsed}s, more than timeout_s + 10 s"
case "$mode" in
  kill)
    grep -Eq "process rank 1 .*signal 9" "$log" || fail "output does not name rank 1 as killed" ;;
  hang)
    if [ "$device" = cuda ]; then
      grep -Eq "NCCL allreduce #[0-9]+ .* on rank [02] .*did not complete within ${timeout_s} s" "$log" \
        || fail "output does not name the NCCL allreduce that timed out and the rank"
    else
      grep -Eq "CommError on rank [02]: MPI allreduce #[0-9]+ .*timed out after ${timeout_s} s on rank [02] .*rank 1 has not started it" "$log" \
        || fail "output does not name the timed-out allreduce and the hung rank 1"
    fi ;;
esac
echo "PASS"
