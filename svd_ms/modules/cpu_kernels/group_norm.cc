// GroupNorm forward on float32 for MindSpore's CPU backend, called through ops.Custom(func_type="aot"),
// optionally followed by SiLU in the same pass.
//
// Why: MindSpore 2.10's CPU GroupNorm kernel and the composition of vectorised operators that
// replaced it (svd_ms/modules/composed_kernels.py) both take several passes with an operator
// launch each; the temporal VAE's decode of 4 frames of 128x128 spent 1.4 s of 7.5 s in its 58
// GroupNorms (benchmarks/layer_times.py --part vae). Here: per (sample, group), the mean and the
// mean squared deviation accumulated in double (two passes over a contiguous block), then one
// pass that normalises and applies each channel's affine. Every GroupNorm of the video models'
// residual blocks is followed by SiLU, which MindSpore runs as a further pass over the tensor;
// applied here it costs no memory traffic. The (sample, group) blocks are spread over threads.
//
// No -ffast-math (see exact_gelu.cc): expf's vector form is declared below for the same reason
// as erff's there.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "parallel.h"

extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}

namespace {

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}

double block_mean(const float *x, int64_t length) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < length; ++i) sum += static_cast<double>(x[i]);
  return sum / static_cast<double>(length);
}

double block_variance(const float *x, int64_t length, double mean) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < length; ++i) {
    const double deviation = static_cast<double>(x[i]) - mean;
    sum += deviation * deviation;
  }
  return sum / static_cast<double>(length);
}

struct Norm {
  const float *x, *weight, *bias;
  float *y;
  int64_t groups, group_channels, spatial;
  double eps;
  bool silu;
};

void normalise_block(const Norm &n, int64_t block) {
  const int64_t group_length = n.group_channels * n.spatial;
  const float *source = n.x + block * group_length;
  float *target = n.y + block * group_length;
  const double mean = block_mean(source, group_length);
  const double inv_std = 1.0 / std::sqrt(block_variance(source, group_length, mean) + n.eps);
  const int64_t first_channel = (block % n.groups) * n.group_channels;
  for (int64_t c = 0; c < n.group_channels; ++c) {
    const double scale = static_cast<double>(n.weight[first_channel + c]) * inv_std;
    const float scale_f = static_cast<float>(scale);
    const float shift_f = static_cast<float>(static_cast<double>(n.bias[first_channel + c]) - mean * scale);
    const float *in = source + c * n.spatial;
    float *out = target + c * n.spatial;
    if (n.silu) {
#pragma omp simd
      for (int64_t i = 0; i < n.spatial; ++i) {
        const float v = in[i] * scale_f + shift_f;
        out[i] = v / (1.0f + expf(-v));
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n.spatial; ++i) out[i] = in[i] * scale_f + shift_f;
    }
  }
}

}  // namespace

// Inputs: x (N, C, *spatial), weight (C), bias (C), settings (4) = [groups, eps, silu (0 or 1),
// threads]; output y like x: GroupNorm(x), or SiLU(GroupNorm(x)).
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit.
extern "C" int GroupNormFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  if (ndims[0] < 2 || ndims[1] != 1 || ndims[2] != 1 || ndims[3] != 1 || shapes[3][0] != 4) return 2;
  const int64_t samples = shapes[0][0];
  const int64_t channels = shapes[0][1];
  int64_t spatial = 1;
  for (int axis = 2; axis < ndims[0]; ++axis) spatial *= shapes[0][axis];
  const float *settings = static_cast<const float *>(params[3]);
  Norm n{};
  n.groups = static_cast<int64_t>(settings[0]);
  n.eps = static_cast<double>(settings[1]);
  n.silu = settings[2] != 0.0f;
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(settings[3]));
  if (n.groups <= 0 || channels % n.groups != 0 || shapes[1][0] != channels || shapes[2][0] != channels) return 3;
  n.group_channels = channels / n.groups;
  n.spatial = spatial;
  if (n.group_channels * spatial == 0) return 0;
  n.x = static_cast<const float *>(params[0]);
  n.weight = static_cast<const float *>(params[1]);
  n.bias = static_cast<const float *>(params[2]);
  n.y = static_cast<float *>(params[4]);

  // Contiguous shares of the blocks; a thread is worth starting only for enough values.
  const int64_t blocks = samples * n.groups;
  constexpr int64_t kValuesPerThread = 1 << 16;
  const int64_t parts = std::max<int64_t>(1, std::min({threads, blocks, blocks * n.group_channels * spatial / kValuesPerThread}));
  auto share = [&](int64_t part) {
    for (int64_t block = blocks * part / parts; block < blocks * (part + 1) / parts; ++block) normalise_block(n, block);
  };
  kernels::run_parts(parts, share);
  return 0;
}
