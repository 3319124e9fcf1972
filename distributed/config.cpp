// validate(DistConfig): the cross-field checks of the `distributed` YAML section. Messages name
// `distributed.<key>` and say what to change. Launch facts (rank, world size) are not checked
// here: they come from the launcher.
#include "distributed/config.h"

#include <cmath>

#include "core/errors.h"

namespace vit::dist {

void validate(const DistConfig& config) {
  VIT_CHECK(config.backend == "auto" || config.backend == "mpi" || config.backend == "nccl",
            ConfigError, "distributed.backend: must be auto, mpi or nccl; got '", config.backend,
            "'");
  VIT_CHECK(std::isfinite(config.bucket_mb) && config.bucket_mb > 0.0 && config.bucket_mb <= 4096.0,
            ConfigError, "distributed.bucket_mb: must be in (0, 4096] MiB, got ", config.bucket_mb,
            " (25 is a good default; smaller buckets overlap more but send more messages)");
  VIT_CHECK(std::isfinite(config.timeout_s) && config.timeout_s > 0.0, ConfigError,
            "distributed.timeout_s: must be > 0 seconds, got ", config.timeout_s,
            " (it bounds how long a stuck collective may hang the job)");
  VIT_CHECK(config.check_every_steps >= 0, ConfigError,
            "distributed.check_every_steps: must be >= 0 (0 turns the parameter checksum off), got ",
            config.check_every_steps);
  VIT_CHECK(config.on_nonfinite == "skip" || config.on_nonfinite == "stop", ConfigError,
            "distributed.on_nonfinite: must be skip or stop; got '", config.on_nonfinite, "'");
}

}  // namespace vit::dist
