// A convolution over time only (kernel (K, 1, 1), stride 1) on float32 for MindSpore's CPU
// backend, called through ops.Custom(func_type="aot").
//
// Why: the video models mix frames with (3, 1, 1) convolutions. MindSpore 2.10 runs them (as 2-D
// (3, 1) convolutions, its faster route) through oneDNN's im2col + GEMM path on plain NCHW data,
// which first copies the input three times over; in a 4x128 temporal VAE decode they took 1.2 s
// against PyTorch's 0.6 s. Without the copy, each output frame is a sum of K matrix products: for
// sample b and output frame t, y[b, :, t, :] = bias + sum_k W_k @ x[b, :, t + k - pad, :], where a
// frame of the (channels, frames, positions) block is a (channels x positions) matrix whose rows
// lie frames * positions apart: a plain strided GEMM operand. The GEMM is oneDNN's own
// `dnnl_sgemm`, taken from the library MindSpore ships (so it runs at the rates of MindSpore's
// MatMul); the positions are split over `threads` threads.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

namespace {

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}

struct Problem {
  int64_t samples, in_channels, out_channels, frames, out_frames, positions, taps, pad;
  const float *x, *weight_by_tap, *bias;
  float *y;
};

// Rows of a frame lie frames * positions floats apart, often a power of two, where the GEMM's
// reads alias in the cache (ad-hoc: 128 x 16384 x 128 ran at 47 against 74 GFLOP/s when its operand
// rows were 64 K floats apart rather than 16 K). So a block of positions is first gathered, every
// channel's frames side by side in one row and rows a padded stride apart; then each tap is one
// GEMM over all the output frames it reaches (their columns are contiguous in the block), summed
// in a padded output block that is copied out. Input and output are read and written once each.
constexpr int64_t kBlockFloats = 256 * 1024;  // a gathered block of about 1 MB: it stays in cache

int64_t block_width(const Problem &p) {
  const int64_t width = kBlockFloats / std::max<int64_t>(1, p.in_channels * p.frames) / 16 * 16;
  return std::max<int64_t>(16, width);
}

int run_columns(const Problem &p, int64_t first, int64_t last) {
  if (last <= first) return 0;
  const int64_t block = std::min(block_width(p), last - first);
  const int64_t in_stride = p.frames * block + 16, out_stride = p.out_frames * block + 16;
  std::vector<float> gathered(p.in_channels * in_stride), summed(p.out_channels * out_stride);
  for (int64_t b = 0; b < p.samples; ++b) {
    const float *x_sample = p.x + b * p.in_channels * p.frames * p.positions;
    float *y_sample = p.y + b * p.out_channels * p.out_frames * p.positions;
    for (int64_t start = first; start < last; start += block) {
      const int64_t width = std::min(block, last - start);
      for (int64_t c = 0; c < p.in_channels; ++c)
        for (int64_t t = 0; t < p.frames; ++t)
          std::memcpy(&gathered[c * in_stride + t * width], x_sample + (c * p.frames + t) * p.positions + start,
                      width * sizeof(float));
      for (int64_t c = 0; c < p.out_channels; ++c)
        std::fill_n(&summed[c * out_stride], p.out_frames * width, p.bias[c]);
      for (int64_t k = 0; k < p.taps; ++k) {
        // output frames t whose source frame t + k - pad exists (zero padding in time elsewhere)
        const int64_t t0 = std::max<int64_t>(0, p.pad - k);
        const int64_t t1 = std::min<int64_t>(p.out_frames, p.frames - k + p.pad);
        if (t1 <= t0) continue;
        const int status = dnnl_sgemm('N', 'N', p.out_channels, (t1 - t0) * width, p.in_channels, 1.0f,
                                      p.weight_by_tap + k * p.out_channels * p.in_channels, p.in_channels,
                                      &gathered[(t0 + k - p.pad) * width], in_stride, 1.0f,
                                      &summed[t0 * width], out_stride);
        if (status != 0) return 10 + status;
      }
      for (int64_t c = 0; c < p.out_channels; ++c)
        for (int64_t t = 0; t < p.out_frames; ++t)
          std::memcpy(y_sample + (c * p.out_frames + t) * p.positions + start, &summed[c * out_stride + t * width],
                      width * sizeof(float));
    }
  }
  return 0;
}

}  // namespace

// Inputs: x (N, C_in, T, *positions), weight (C_out, C_in, K, 1...), bias (C_out),
// settings (2) = [time padding, threads]; output y (N, C_out, T + 2 pad - K + 1, *positions).
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit.
extern "C" int TemporalConvFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                   void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  if (ndims[0] < 3 || ndims[1] != ndims[0] || ndims[2] != 1 || ndims[3] != 1 || shapes[3][0] != 2) return 2;
  const float *settings = static_cast<const float *>(params[3]);
  Problem p{};
  p.samples = shapes[0][0];
  p.in_channels = shapes[0][1];
  p.frames = shapes[0][2];
  p.out_channels = shapes[1][0];
  p.taps = shapes[1][2];
  p.pad = static_cast<int64_t>(settings[0]);
  p.positions = 1;
  for (int axis = 3; axis < ndims[0]; ++axis) {
    if (shapes[1][axis] != 1) return 3;
    p.positions *= shapes[0][axis];
  }
  p.out_frames = p.frames + 2 * p.pad - p.taps + 1;
  if (shapes[1][1] != p.in_channels || shapes[2][0] != p.out_channels || p.pad < 0 || p.out_frames < 0) return 3;
  if (static_cast<int64_t>(ndims[4]) != ndims[0] || shapes[4][2] != p.out_frames) return 3;
  if (p.samples * p.out_frames * p.positions * p.out_channels == 0) return 0;

  // The GEMM wants each tap's (C_out x C_in) matrix contiguous; the weight holds them interleaved.
  std::vector<float> by_tap(p.taps * p.out_channels * p.in_channels);
  const float *weight = static_cast<const float *>(params[1]);
  for (int64_t o = 0; o < p.out_channels; ++o)
    for (int64_t i = 0; i < p.in_channels; ++i)
      for (int64_t k = 0; k < p.taps; ++k)
        by_tap[(k * p.out_channels + o) * p.in_channels + i] = weight[(o * p.in_channels + i) * p.taps + k];
  p.x = static_cast<const float *>(params[0]);
  p.weight_by_tap = by_tap.data();
  p.bias = static_cast<const float *>(params[2]);
  p.y = static_cast<float *>(params[4]);

  // Split positions in multiples of 16 floats (whole cache lines), at most one part per thread.
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(settings[1]));
  const int64_t part = std::max<int64_t>(16, (p.positions + threads - 1) / threads + 15) / 16 * 16;
  const int64_t parts = (p.positions + part - 1) / part;
  std::vector<int> status(parts, 0);
  std::vector<std::thread> helpers;
  for (int64_t i = 1; i < parts; ++i) {
    helpers.emplace_back([&, i] { status[i] = run_columns(p, i * part, std::min(p.positions, (i + 1) * part)); });
  }
  status[0] = run_columns(p, 0, std::min(p.positions, part));
  for (auto &helper : helpers) helper.join();
  for (int s : status) {
    if (s != 0) return s;
  }
  return 0;
}
