// GroupNorm forward on float32 for MindSpore's CPU backend, called through ops.Custom(func_type="aot").
//
// Why: MindSpore 2.10's CPU GroupNorm kernel and the composition of vectorised operators that
// replaced it (svd_ms/modules/composed_kernels.py) both take several passes with an operator
// launch each; the temporal VAE's decode of 4 frames of 128x128 spent 1.4 s of 7.5 s in its 58
// GroupNorms (benchmarks/layer_times.py --part vae). Here: per (sample, group), the mean and the
// mean squared deviation accumulated in double (two passes over a contiguous block), then one
// pass that normalises and applies each channel's affine.
#include <cmath>
#include <cstdint>
#include <cstring>

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

}  // namespace

// Inputs: x (N, C, *spatial), weight (C), bias (C), settings (2) = [groups, eps]; output y like x.
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit.
extern "C" int GroupNormFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  if (ndims[0] < 2 || ndims[1] != 1 || ndims[2] != 1 || ndims[3] != 1 || shapes[3][0] != 2) return 2;
  const int64_t samples = shapes[0][0];
  const int64_t channels = shapes[0][1];
  int64_t spatial = 1;
  for (int axis = 2; axis < ndims[0]; ++axis) spatial *= shapes[0][axis];
  const float *settings = static_cast<const float *>(params[3]);
  const int64_t groups = static_cast<int64_t>(settings[0]);
  const double eps = static_cast<double>(settings[1]);
  if (groups <= 0 || channels % groups != 0 || shapes[1][0] != channels || shapes[2][0] != channels) return 3;
  const int64_t group_channels = channels / groups;
  const int64_t group_length = group_channels * spatial;
  if (group_length == 0) return 0;

  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[4]);
  for (int64_t block = 0; block < samples * groups; ++block) {
    const float *source = x + block * group_length;
    float *target = y + block * group_length;
    const double mean = block_mean(source, group_length);
    const double inv_std = 1.0 / std::sqrt(block_variance(source, group_length, mean) + eps);
    const int64_t first_channel = (block % groups) * group_channels;
    for (int64_t c = 0; c < group_channels; ++c) {
      const double scale = static_cast<double>(weight[first_channel + c]) * inv_std;
      const float scale_f = static_cast<float>(scale);
      const float shift_f = static_cast<float>(static_cast<double>(bias[first_channel + c]) - mean * scale);
      const float *in = source + c * spatial;
      float *out = target + c * spatial;
#pragma omp simd
      for (int64_t i = 0; i < spatial; ++i) out[i] = in[i] * scale_f + shift_f;
    }
  }
  return 0;
}
