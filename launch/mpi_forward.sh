# Sourced by the mpirun launchers (run_local.sh, multinode_hostfile.sh): `mpi_forward` holds the
# -x flags for the settings the ranks need that are set here (mpirun warns about each unset one),
# and Open MPI is allowed to run as root when this is root.
mpi_forward=()
for v in NCCL_NVLS_ENABLE NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA OMP_NUM_THREADS PATH LD_LIBRARY_PATH; do
  if [ -n "${!v+x}" ]; then mpi_forward+=(-x "$v"); fi
done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
