// Multi-head attention, softmax(scale * q k^T) v, on float32 for MindSpore's CPU backend, called
// through ops.Custom(func_type="aot").
//
// Why: composed in MindSpore 2.10's PyNative mode, each attention call splits the heads out of
// (batch, tokens, heads * dim) with a transpose whose reshape MindSpore copies (q, k and v), then
// scales, casts, multiplies, takes the softmax, multiplies again and copies the heads back: about
// ten launches and four copies of the largest tensors per call. Here the heads are read where
// they lie: for head h the rows of q, k and v are heads * dim floats apart, which is a GEMM's
// leading dimension, so each (sample, head, block of queries) is two oneDNN GEMM calls around
// a row softmax, writing straight into the output's own head columns. The scores of a block of
// queries stay in a small buffer; the (tokens x tokens) matrix is never whole in memory.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "onednn.h"
#include "parallel.h"

extern "C" {
// glibc's own declaration carries no SIMD variant unless __FAST_MATH__ is defined (see exact_gelu.cc).
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}

namespace {

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}

// Scores of one block of queries: about 256 K floats (1 MB), so that they stay in cache.
constexpr int64_t kScoreFloats = 256 * 1024;

struct Attention {
  int64_t samples, queries, keys, heads, dim, width;  // width = heads * dim, the rows' stride
  int64_t block_queries, blocks_per_head;
  float scale;
  const float *q, *k, *v;
  float *out;
};

// Each row of `scores` (rows x keys) becomes its softmax, with the row's maximum subtracted first
// as every exact softmax does.
void softmax_rows(float *scores, int64_t rows, int64_t keys) {
  for (int64_t r = 0; r < rows; ++r) {
    float *row = scores + r * keys;
    float top = row[0];
    for (int64_t j = 1; j < keys; ++j) top = std::max(top, row[j]);
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (int64_t j = 0; j < keys; ++j) {
      row[j] = expf(row[j] - top);
      total += row[j];
    }
    const float inverse = 1.0f / total;
#pragma omp simd
    for (int64_t j = 0; j < keys; ++j) row[j] *= inverse;
  }
}

// One task: queries [first, first + rows) of one head of one sample.
int run_task(const Attention &a, int64_t task, std::vector<float> &scores) {
  const int64_t sample = task / (a.heads * a.blocks_per_head);
  const int64_t head = task / a.blocks_per_head % a.heads;
  const int64_t first = task % a.blocks_per_head * a.block_queries;
  const int64_t rows = std::min(a.block_queries, a.queries - first);
  const int64_t column = head * a.dim;
  const float *q = a.q + (sample * a.queries + first) * a.width + column;
  const float *k = a.k + sample * a.keys * a.width + column;
  const float *v = a.v + sample * a.keys * a.width + column;
  float *out = a.out + (sample * a.queries + first) * a.width + column;
  scores.resize(rows * a.keys);
  int status = onednn::sgemm('N', 'T', rows, a.keys, a.dim, a.scale, q, a.width, k, a.width, 0.0f, scores.data(), a.keys);
  if (status != 0) return 10 + status;
  softmax_rows(scores.data(), rows, a.keys);
  status = onednn::sgemm('N', 'N', rows, a.dim, a.keys, 1.0f, scores.data(), a.keys, v, a.width, 0.0f, out, a.width);
  return status == 0 ? 0 : 10 + status;
}

}  // namespace

// Inputs: q (B, Nq, H*d), k (B, Nk, H*d), v (B, Nk, H*d), settings (3) = [heads, scale, threads];
// output (B, Nq, H*d), head h in columns [h*d, (h+1)*d) as the inputs. Returns non-zero (MindSpore
// raises) on other dtypes or shapes that do not fit.
extern "C" int AttentionFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  if (ndims[0] != 3 || ndims[1] != 3 || ndims[2] != 3 || ndims[3] != 1 || shapes[3][0] != 3 || ndims[4] != 3) return 2;
  const float *settings = static_cast<const float *>(params[3]);
  Attention a{};
  a.samples = shapes[0][0];
  a.queries = shapes[0][1];
  a.width = shapes[0][2];
  a.keys = shapes[1][1];
  a.heads = static_cast<int64_t>(settings[0]);
  a.scale = settings[1];
  if (a.heads < 1 || a.width % a.heads != 0) return 3;
  a.dim = a.width / a.heads;
  for (int i = 1; i < 3; ++i) {
    if (shapes[i][0] != a.samples || shapes[i][1] != a.keys || shapes[i][2] != a.width) return 3;
  }
  if (shapes[4][0] != a.samples || shapes[4][1] != a.queries || shapes[4][2] != a.width) return 3;
  if (a.samples * a.queries * a.width == 0) return 0;
  if (a.keys == 0) return 3;  // a softmax over nothing
  a.q = static_cast<const float *>(params[0]);
  a.k = static_cast<const float *>(params[1]);
  a.v = static_cast<const float *>(params[2]);
  a.out = static_cast<float *>(params[4]);
  a.block_queries = std::max<int64_t>(1, std::min(a.queries, kScoreFloats / a.keys));
  a.blocks_per_head = (a.queries + a.block_queries - 1) / a.block_queries;

  // Tasks are taken in order from a shared counter: the heads of short sequences (temporal
  // attention: thousands of tasks of a few rows) and the query blocks of long ones balance alike.
  const int64_t tasks = a.samples * a.heads * a.blocks_per_head;
  const int64_t threads = std::max<int64_t>(1, std::min(tasks, static_cast<int64_t>(settings[2])));
  std::atomic<int64_t> next{0};
  std::atomic<int> failed{0};
  auto work = [&](int64_t) {
    std::vector<float> scores;
    for (int64_t task = next++; task < tasks && failed.load() == 0; task = next++) {
      const int status = run_task(a, task, scores);
      if (status != 0) failed = status;
    }
  };
  kernels::run_parts(threads, work);
  return failed.load();
}
