// A stride-1 2-D convolution on float32 for MindSpore's CPU backend, called through
// ops.Custom(func_type="aot"): the video models' 3x3 convolutions, and their (K, 1, 1) temporal
// convolutions seen as (K, 1) convolutions over (frames, positions).
//
// Why: MindSpore 2.10 runs convolutions on plain NCHW data through oneDNN's im2col + GEMM path,
// which first writes the input out once per kernel tap (nine times for 3x3); in a 4x128 temporal
// VAE decode its convolutions took 5.2 s against PyTorch's 3.4 s, the (3, 1, 1) ones twice
// PyTorch's time. Without that copy: for a block of output rows and columns, the input block
// with its halo is gathered once into a buffer whose rows are the block's padded width apart;
// in that flat layout, output (i, j) reads input (i + dy, j + dx) at a fixed offset
// dy * width + dx for every tap, so each tap is one GEMM, y_block += W_tap @ x_block[offset:],
// over all the block's positions at once (a few columns per row are computed and dropped). The
// GEMM is oneDNN's `dnnl_sgemm` from the library MindSpore ships (the rates of MindSpore's own
// MatMul); blocks are spread over threads.
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

// A gathered input block of about 1 MB, so that it and the output block stay in cache.
constexpr int64_t kBlockFloats = 256 * 1024;
constexpr int64_t kMaxBlockRows = 16;

struct Conv {
  int64_t samples, in_channels, out_channels, height, width, kernel_h, kernel_w, pad_h, pad_w;
  int64_t out_height, out_width, block_rows, block_cols;
  const float *x, *weight_by_tap, *bias;
  float *y;
};

struct Block {
  int64_t sample, row, col;
};

int64_t balanced(int64_t total, int64_t most) {  // equal parts of at most `most`
  const int64_t parts = (total + most - 1) / most;
  return (total + parts - 1) / parts;
}

// Block sizes: up to 16 output rows, then as many output columns as fit the gathered block, both
// balanced so that no block is a sliver.
void plan_blocks(Conv &c) {
  c.block_rows = balanced(c.out_height, kMaxBlockRows);
  const int64_t halo_rows = std::min(c.block_rows + c.kernel_h - 1, c.height);
  const int64_t cols = kBlockFloats / std::max<int64_t>(1, c.in_channels * halo_rows) - (c.kernel_w - 1);
  c.block_cols = balanced(c.out_width, std::max<int64_t>(16, cols));
}

// Output channels [first_out, last_out) of one block: gather, one GEMM per tap, scatter. Halo
// rows that fall in the zero padding are neither gathered nor read: each tap's GEMM covers only
// the output rows whose source row exists (at a video's first and last frame, a temporal tap
// reaches two of three rows).
int run_block(const Conv &c, const Block &block, int64_t first_out, int64_t last_out, std::vector<float> &gathered,
              std::vector<float> &summed) {
  const int64_t rows = std::min(c.block_rows, c.out_height - block.row);
  const int64_t cols = std::min(c.block_cols, c.out_width - block.col);
  const int64_t span = cols + c.kernel_w - 1;            // gathered row width
  const int64_t in_rows = rows + c.kernel_h;             // halo, plus one row for the last tap's overrun
  const int64_t in_stride = in_rows * span + 16;         // 16 floats apart: no cache aliasing between channels
  const int64_t out_stride = rows * span + 16;
  const int64_t outs = last_out - first_out;
  gathered.resize(c.in_channels * in_stride);
  summed.resize(outs * out_stride);
  const float *x_sample = c.x + block.sample * c.in_channels * c.height * c.width;
  const int64_t first_col = block.col - c.pad_w;
  const int64_t copy_from = std::max<int64_t>(0, first_col), copy_to = std::min(c.width, first_col + span);
  const int64_t first_row = block.row - c.pad_h;  // source row of gathered row 0
  const int64_t valid_from = std::max<int64_t>(0, -first_row);
  const int64_t valid_to = std::min(rows + c.kernel_h - 1, c.height - first_row);
  for (int64_t ch = 0; ch < c.in_channels; ++ch) {
    for (int64_t r = valid_from; r < valid_to; ++r) {
      float *target = &gathered[ch * in_stride + r * span];
      std::fill(target, target + span, 0.0f);  // the columns in the zero padding
      if (copy_to > copy_from)
        std::memcpy(target + (copy_from - first_col), x_sample + (ch * c.height + first_row + r) * c.width + copy_from,
                    (copy_to - copy_from) * sizeof(float));
    }
  }
  std::fill(summed.begin(), summed.end(), 0.0f);
  for (int64_t dy = 0; dy < c.kernel_h; ++dy) {
    // output rows i of this block whose source row i + dy was gathered
    const int64_t i0 = std::max<int64_t>(0, valid_from - dy), i1 = std::min(rows, valid_to - dy);
    if (i1 <= i0) continue;
    for (int64_t dx = 0; dx < c.kernel_w; ++dx) {
      const float *w = c.weight_by_tap + ((dy * c.kernel_w + dx) * c.out_channels + first_out) * c.in_channels;
      const int status = dnnl_sgemm('N', 'N', outs, (i1 - i0) * span, c.in_channels, 1.0f, w, c.in_channels,
                                    &gathered[(i0 + dy) * span + dx], in_stride, 1.0f, &summed[i0 * span], out_stride);
      if (status != 0) return 10 + status;
    }
  }
  // The bias is added once, after the taps' sum, as MindSpore's and PyTorch's convolutions do:
  // starting the sum from it would round every tap's partial sum at the bias's scale, which a
  // GroupNorm after a convolution of near-constant input magnifies.
  float *y_sample = c.y + block.sample * c.out_channels * c.out_height * c.out_width;
  for (int64_t o = 0; o < outs; ++o) {
    const float bias = c.bias[first_out + o];
    for (int64_t r = 0; r < rows; ++r) {
      float *target = y_sample + ((first_out + o) * c.out_height + block.row + r) * c.out_width + block.col;
      const float *source = &summed[o * out_stride + r * span];
      for (int64_t j = 0; j < cols; ++j) target[j] = source[j] + bias;
    }
  }
  return 0;
}

// Runs job(i) for i in [0, count) over up to `threads` threads (this one included), in
// contiguous shares; returns the first non-zero status.
template <typename Job>
int parallel(int64_t count, int64_t threads, Job job) {
  const int64_t parts = std::max<int64_t>(1, std::min(threads, count));
  std::vector<int> status(parts, 0);
  auto share = [&](int64_t part) {
    std::vector<float> gathered, summed;
    for (int64_t i = count * part / parts; i < count * (part + 1) / parts && status[part] == 0; ++i)
      status[part] = job(i, gathered, summed);
  };
  std::vector<std::thread> helpers;
  for (int64_t part = 1; part < parts; ++part) helpers.emplace_back(share, part);
  share(0);
  for (auto &helper : helpers) helper.join();
  for (int s : status) {
    if (s != 0) return s;
  }
  return 0;
}

}  // namespace

// Inputs: x (N, C_in, H, W), weight (C_out, C_in, KH, KW), bias (C_out),
// settings (3) = [pad_h, pad_w, threads]; output y (N, C_out, H + 2 pad_h - KH + 1, W + 2 pad_w - KW + 1).
// A video's temporal convolution comes as it is: x (N, C_in, T, H, W), weight (C_out, C_in, K, 1, 1),
// pad_w 0, y (N, C_out, T + 2 pad_h - K + 1, H, W), whose memory is that of the 4-D case over
// (T, H * W): a reshape to 4-D before and after would be copied twice by MindSpore.
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit.
extern "C" int Conv2dFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                             void * /*stream*/, void * /*extra*/) {
  if (nparam != 5) return 1;
  for (int i = 0; i < nparam; ++i) {
    if (!is_float32(dtypes[i])) return 1;
  }
  const int rank = ndims[0];
  if ((rank != 4 && rank != 5) || ndims[1] != rank || ndims[2] != 1 || ndims[3] != 1 || shapes[3][0] != 3 ||
      ndims[4] != rank)
    return 2;
  const float *settings = static_cast<const float *>(params[3]);
  Conv c{};
  c.samples = shapes[0][0];
  c.in_channels = shapes[0][1];
  c.height = shapes[0][2];
  c.width = rank == 4 ? shapes[0][3] : shapes[0][3] * shapes[0][4];
  c.out_channels = shapes[1][0];
  c.kernel_h = shapes[1][2];
  c.kernel_w = shapes[1][3];
  c.pad_h = static_cast<int64_t>(settings[0]);
  c.pad_w = static_cast<int64_t>(settings[1]);
  if (rank == 5 && (c.kernel_w != 1 || shapes[1][4] != 1 || c.pad_w != 0)) return 3;
  c.out_height = c.height + 2 * c.pad_h - c.kernel_h + 1;
  c.out_width = c.width + 2 * c.pad_w - c.kernel_w + 1;
  if (shapes[1][1] != c.in_channels || shapes[2][0] != c.out_channels || c.pad_h < 0 || c.pad_w < 0 ||
      c.out_height < 0 || c.out_width < 0 || shapes[4][0] != c.samples || shapes[4][1] != c.out_channels ||
      shapes[4][2] != c.out_height)
    return 3;
  if (rank == 4 ? shapes[4][3] != c.out_width : (shapes[4][3] != shapes[0][3] || shapes[4][4] != shapes[0][4]))
    return 3;
  if (c.samples * c.out_channels * c.out_height * c.out_width == 0) return 0;
  const int64_t threads = std::max<int64_t>(1, static_cast<int64_t>(settings[2]));
  c.x = static_cast<const float *>(params[0]);
  c.bias = static_cast<const float *>(params[2]);
  c.y = static_cast<float *>(params[4]);
  plan_blocks(c);

  // The GEMM wants each tap's (C_out x C_in) matrix contiguous; the weight interleaves the taps.
  const int64_t taps = c.kernel_h * c.kernel_w;
  std::vector<float> by_tap(taps * c.out_channels * c.in_channels);
  const float *weight = static_cast<const float *>(params[1]);
  parallel(c.out_channels, threads, [&](int64_t o, std::vector<float> &, std::vector<float> &) {
    for (int64_t i = 0; i < c.in_channels; ++i)
      for (int64_t tap = 0; tap < taps; ++tap)
        by_tap[(tap * c.out_channels + o) * c.in_channels + i] = weight[(o * c.in_channels + i) * taps + tap];
    return 0;
  });
  c.weight_by_tap = by_tap.data();

  std::vector<Block> blocks;
  for (int64_t n = 0; n < c.samples; ++n)
    for (int64_t row = 0; row < c.out_height; row += c.block_rows)
      for (int64_t col = 0; col < c.out_width; col += c.block_cols) blocks.push_back({n, row, col});
  if (static_cast<int64_t>(blocks.size()) >= threads) {
    return parallel(static_cast<int64_t>(blocks.size()), threads,
                    [&](int64_t i, std::vector<float> &gathered, std::vector<float> &summed) {
                      return run_block(c, blocks[i], 0, c.out_channels, gathered, summed);
                    });
  }
  // Fewer blocks than threads (small images): split the output channels instead.
  const int64_t shares = std::min(threads, c.out_channels);
  return parallel(shares, shares, [&](int64_t share, std::vector<float> &gathered, std::vector<float> &summed) {
    const int64_t first = c.out_channels * share / shares, last = c.out_channels * (share + 1) / shares;
    for (const Block &block : blocks) {
      const int status = run_block(c, block, first, last, gathered, summed);
      if (status != 0) return status;
    }
    return 0;
  });
}
