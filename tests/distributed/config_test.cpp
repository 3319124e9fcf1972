// validate(DistConfig): defaults pass; each bad value is refused with its key named.
#include <gtest/gtest.h>

#include "core/errors.h"
#include "distributed/config.h"

namespace vit::dist {
namespace {

void expect_refused(const DistConfig& config, const std::string& key) {
  try {
    validate(config);
    ADD_FAILURE() << "expected ConfigError naming " << key;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(DistConfig, DefaultsAreValid) { EXPECT_NO_THROW(validate(DistConfig{})); }

TEST(DistConfig, RefusesBadValuesNamingTheKey) {
  DistConfig c;
  c.backend = "gloo";
  expect_refused(c, "distributed.backend");
  c = DistConfig{};
  c.bucket_mb = 0.0;
  expect_refused(c, "distributed.bucket_mb");
  c.bucket_mb = -1.0;
  expect_refused(c, "distributed.bucket_mb");
  c = DistConfig{};
  c.timeout_s = 0.0;
  expect_refused(c, "distributed.timeout_s");
  c = DistConfig{};
  c.check_every_steps = -5;
  expect_refused(c, "distributed.check_every_steps");
  c = DistConfig{};
  c.on_nonfinite = "ignore";
  expect_refused(c, "distributed.on_nonfinite");
}

TEST(DistConfig, AcceptsEveryDocumentedChoice) {
  for (const char* backend : {"auto", "mpi", "nccl"}) {
    for (const char* policy : {"skip", "stop"}) {
      DistConfig c;
      c.backend = backend;
      c.on_nonfinite = policy;
      EXPECT_NO_THROW(validate(c));
    }
  }
}

}  // namespace
}  // namespace vit::dist
