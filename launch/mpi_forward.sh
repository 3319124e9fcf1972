# Sourced by the mpirun launchers (run_local.sh, multinode_hostfile.sh): `mpi_forward` holds the
# -x flags for the settings the ranks need that are set here (mpirun warns about each unset one),
# and Open MPI is allowed to run as root when this is root.
mpi_forward=()
for v in NCCL_NVLS_ENABLE NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA OMP_NUM_THREADS PATH LD_LIBRARY_PATH; do
  if [ -n "${!v+x}" ]; then mpi_forward+=(-x "$v"); fi
done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# run_mpirun ARGS...: mpirun ARGS, in a session of its own so that a terminal's Ctrl-C reaches
# this script and not mpirun (which would kill the ranks). SIGTERM, SIGINT or SIGHUP here (a
# scheduler, a user) becomes one SIGUSR1 to mpirun, which Open MPI forwards to every rank: each
# writes a checkpoint and exits 75, and so does this script (mpirun's status). Sent to mpirun
# itself, SIGTERM gives the ranks 60 s, not Open MPI's default 1 s, before SIGKILL.
run_mpirun() {
  setsid mpirun --mca odls_base_sigkill_timeout 60 "$@" &
  local pid=$! rc=0
  trap 'kill -USR1 "$pid" 2>/dev/null || true' TERM INT HUP
  while :; do
    wait "$pid" && rc=0 || rc=$?
    kill -0 "$pid" 2>/dev/null || break  # otherwise wait returned for a signal; the job goes on
  done
  wait "$pid" 2>/dev/null && rc=0 || rc=$?  # the job's own status, if a signal cut the last wait short
  trap - TERM INT HUP
  return "$rc"
}
