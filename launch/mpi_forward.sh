# Sourced by the mpirun launchers (run_local.sh, multinode_hostfile.sh): `mpi_forward` holds the
# -x flags for the settings the ranks need that are set here (mpirun warns about each unset one),
# and Open MPI is allowed to run as root when this is root.
mpi_forward=()
for v in NCCL_NVLS_ENABLE NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA OMP_NUM_THREADS PATH LD_LIBRARY_PATH; do
  if [ -n "${!v+x}" ]; then mpi_forward+=(-x "$v"); fi
done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# run_forwarding SIGNAL COMMAND...: COMMAND in a session of its own, so that a terminal's Ctrl-C
# reaches this script and not the job directly (mpirun would kill the ranks). SIGTERM, SIGINT or
# SIGHUP here (a scheduler, a user) becomes one SIGNAL to COMMAND: SIGUSR1 to mpirun, which Open
# MPI forwards to every rank, or SIGTERM to vit-train itself; each rank writes a checkpoint and
# exits 75, and so does this function (the job's status). Sets `stop_requested` when signalled.
stop_requested=0
run_forwarding() {
  local forward=$1
  shift
  setsid "$@" &
  local pid=$! rc=0
  trap 'stop_requested=1; kill -'"$forward"' "$pid" 2>/dev/null || true' TERM INT HUP
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break  # otherwise wait returned for a signal; the job goes on
  done
  wait "$pid" 2>/dev/null && rc=0 || rc=$?  # the job's own status, if a signal cut the last wait short
  trap - TERM INT HUP
  return "$rc"
}

# run_with_restarts MAX SIGNAL COMMAND...: run_forwarding, started again (it resumes from the
# newest committed checkpoint) after a failure, at most MAX times. Not after success (0), a config
# or usage error (2, which a restart would repeat), a stop on request (75) or a signal to this script.
run_with_restarts() {
  local max=$1 attempt=0 rc=0
  shift
  while :; do
    run_forwarding "$@" && rc=0 || rc=$?
    if [ "$rc" = 0 ] || [ "$rc" = 2 ] || [ "$rc" = 75 ] || [ "$stop_requested" = 1 ] || [ "$attempt" -ge "$max" ]; then
      return "$rc"
    fi
    attempt=$((attempt + 1))
    local why="exit status $rc"
    [ "$rc" -gt 128 ] && why="$why (killed by signal $((rc - 128)))"
    echo "launch: the job failed ($why); restart $attempt of $max, from the newest committed checkpoint" >&2
  done
}
