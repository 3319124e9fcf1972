// Learning-rate schedule against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/schedule.h"

using vit::train::LrSchedule;
using vit::train::ScheduleConfig;

TEST(Schedule, WarmupThenCosineToMinLr) {
  ScheduleConfig c;
  c.name = "cosine";
  c.warmup_steps = 10;
  c.min_lr = 0.0;
  LrSchedule s(c, 1.0, 110);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);   // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);  // first decay step: cos(0)
  // 100 decay steps, progress t = (step - 10) / 99; halfway (t = 0.5) the factor is 0.5.
  EXPECT_NEAR(s.at(10 + 99.0 / 2), 0.5 * (1 + std::cos(M_PI * 49.0 / 99.0)), 1e-12);
  EXPECT_NEAR(s.at(109), 0.0, 1e-12);  // last step reaches min_lr
}

TEST(Schedule, LinearDecayAndFractionWarmup) {
  ScheduleConfig c;
  c.name = "linear";
  c.warmup_steps = -1;
  c.warmup_fraction = 0.1;  // 10 of 100 steps
  c.min_lr = 0.1;
  LrSchedule s(c, 1.1, 100);
  EXPECT_EQ(s.warmup_steps(), 10);
  EXPECT_NEAR(s.at(10), 1.1, 1e-12);
  EXPECT_NEAR(s.at(99), 0.1, 1e-12);
  // t = (54 - 10) / 89 -> 1.1 - 1.0 * 44/89
  EXPECT_NEAR(s.at(54), 1.1 - 44.0 / 89.0, 1e-12);
}

TEST(Schedule, ConstantAfterWarmup) {
  ScheduleConfig c;
  c.name = "constant";
  c.warmup_steps = 2;
  LrSchedule s(c, 0.3, 50);
  EXPECT_NEAR(s.at(0), 0.15, 1e-12);
  EXPECT_NEAR(s.at(1), 0.3, 1e-12);
  EXPECT_NEAR(s.at(49), 0.3, 1e-12);
}
