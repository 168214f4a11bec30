// How the kernels spread work over threads: one rule for all of them.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

namespace kernels {

// Runs job(part) for every part in [0, parts): part 0 on the calling thread, each other part on
// a thread of its own; returns when all are done.
template <typename Job>
void run_parts(int64_t parts, Job job) {
  std::vector<std::thread> helpers;
  for (int64_t part = 1; part < parts; ++part) helpers.emplace_back(job, part);
  job(0);
  for (auto &helper : helpers) helper.join();
}

}  // namespace kernels
