// A linear layer, y = x W^T + b over the last axis, on float32 for MindSpore's CPU backend, called
// through ops.Custom(func_type="aot").
//
// Why: in MindSpore 2.10's PyNative mode a linear layer over (..., C) tokens is a reshape to rows,
// a MatMul, a BiasAdd and a reshape back; MindSpore copies each reshaped view before the next
// operator reads it, and a UNet step of the video model runs 464 linear layers. Here the tokens
// are rows as they lie in memory, and the bias is the GEMM's C operand (beta = 1), which oneDNN
// adds once to each finished dot product: one launch, no copies. The GEMM is oneDNN's
// single-precision GEMM (onednn.h); rows, or output columns when there are few rows, are split over
// threads: whichever keeps each thread off the other's share of the larger operand (the weight of
// a (128 x 1280) @ (1280 x 10240) projection is 52 MB and read once in all).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "onednn.h"
#include "parallel.h"

namespace {

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}


// Rows [row0, row1) and output columns [col0, col1) of y = x W^T + b.
int run_part(const float *x, const float *weight, const float *bias, float *y, int64_t width, int64_t outs,
             int64_t row0, int64_t row1, int64_t col0, int64_t col1) {
  if (row1 <= row0 || col1 <= col0) return 0;
  for (int64_t r = row0; r < row1; ++r) std::memcpy(y + r * outs + col0, bias + col0, (col1 - col0) * sizeof(float));
  // oneDNN's GEMM is row-major: y[rows, cols] = x[rows, :] W[cols, :]^T + y (the bias written above).
  const int status = onednn::sgemm('N', 'T', row1 - row0, col1 - col0, width, 1.0f, x + row0 * width, width,
                                weight + col0 * width, width, 1.0f, y + row0 * outs + col0, outs);
  return status == 0 ? 0 : 10 + status;
}

}  // namespace

// Inputs: x (..., C), weight (O, C), bias (O), settings (1) = [threads]; output y (..., O).
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit.
extern "C" int LinearFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  const int rank = ndims[0];
  if (rank < 1 || ndims[1] != 2 || ndims[2] != 1 || ndims[3] != 1 || shapes[3][0] != 1 || ndims[4] != rank) return 2;
  const int64_t width = shapes[0][rank - 1];
  const int64_t outs = shapes[1][0];
  if (shapes[1][1] != width || shapes[2][0] != outs || shapes[4][rank - 1] != outs) return 3;
  int64_t rows = 1;
  for (int axis = 0; axis < rank - 1; ++axis) {
    if (shapes[4][axis] != shapes[0][axis]) return 3;
    rows *= shapes[0][axis];
  }
  if (rows * outs == 0) return 0;
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *bias = static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[4]);
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(static_cast<const float *>(params[3])[0]));
  const bool by_rows = rows > outs;
  const int64_t parts = std::max<int64_t>(1, std::min(threads, by_rows ? rows : outs));
  std::vector<int> status(parts, 0);
  auto part = [&](int64_t p) {
    if (by_rows) {
      status[p] = run_part(x, weight, bias, y, width, outs, rows * p / parts, rows * (p + 1) / parts, 0, outs);
    } else {
      status[p] = run_part(x, weight, bias, y, width, outs, 0, rows, outs * p / parts, outs * (p + 1) / parts);
    }
  };
  kernels::run_parts(parts, part);
  for (int s : status) {
    if (s != 0) return s;
  }
  return 0;
}
