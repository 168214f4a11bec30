// A stride-1 2-D convolution on float32 for MindSpore's CPU backend, called through
// ops.Custom(func_type="aot"): the video models' 3x3 convolutions, and their (K, 1, 1) temporal
// convolutions seen as (K, 1) convolutions over (frames, positions).
//
// Why: MindSpore 2.10 hands oneDNN its convolutions on plain NCHW data, which oneDNN serves with
// an im2col + GEMM path that first writes the input out once per kernel tap; capped at AVX2
// (policy.cpu_kernel_isa_cap) that ran 60-90 GFLOP/s on the VAE's and UNet's shapes here. The same
// library has direct convolution kernels for channel-blocked layouts (8 channels interleaved
// under AVX2), at 170-215 GFLOP/s on the same shapes and host, which is what PyTorch's CPU
// convolutions use. So the input and output are reordered into that layout (the weight into
// whatever oneDNN picks), the convolution runs there, and the output is reordered back: up to four
// oneDNN primitives (its primitive cache keeps repeated shapes from being rebuilt).
//
// MindSpore's oneDNN is built for the "threadpool" runtime: a primitive runs on the threadpool of
// the stream it executes on, so this file supplies one (n tasks over the requested threads). The
// instance of the library is the kernels' own (onednn.h).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

#include "onednn.h"
#include "parallel.h"

namespace {

using namespace onednn;

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}

thread_local bool in_pool_task = false;

// Runs a primitive's tasks over up to `threads` threads, the calling one included, and returns
// when all are done (a synchronous pool: get_flags() == 0).
class Pool final : public dnnl::threadpool_interop::threadpool_iface {
 public:
  explicit Pool(int threads) : threads_(std::max(1, threads)) {}
  int get_num_threads() const override { return threads_; }
  bool get_in_parallel() const override { return in_pool_task; }
  uint64_t get_flags() const override { return 0; }
  void wait() override {}
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    std::atomic<int> next{0};
    auto work = [&](int64_t) {
      const bool outer = in_pool_task;
      in_pool_task = true;
      for (int i = next++; i < n; i = next++) fn(i, n);
      in_pool_task = outer;
    };
    kernels::run_parts(std::min(threads_, n), work);
  }

 private:
  int threads_;
};

// Buffers for the reordered tensors, kept between calls up to a budget. Fresh ones would come
// from the system each call (glibc maps blocks this large afresh and unmaps them when freed):
// a 4x128 VAE decode faulted in about 300 K pages, 1-2 s of system time.
class BufferPool {
 public:
  struct Buffer {
    void *data;
    size_t capacity;
  };
  Buffer take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto fit = kept_.lower_bound(bytes);
      if (fit != kept_.end() && fit->first <= 2 * bytes) {  // reuse, wasting at most half
        const Buffer buffer{fit->second, fit->first};
        kept_bytes_ -= fit->first;
        kept_.erase(fit);
        return buffer;
      }
    }
    const size_t capacity = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    return {std::aligned_alloc(kAlignment, capacity), capacity};
  }
  void give(const Buffer &buffer) {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!kept_.empty() && kept_bytes_ + buffer.capacity > kBudget) {  // the smallest go first
      std::free(kept_.begin()->second);
      kept_bytes_ -= kept_.begin()->first;
      kept_.erase(kept_.begin());
    }
    if (buffer.capacity <= kBudget) {
      kept_.emplace(buffer.capacity, buffer.data);
      kept_bytes_ += buffer.capacity;
    } else {
      std::free(buffer.data);
    }
  }

 private:
  // A 4x128 decode's largest layer reorders 2 x 64 MB; at 14x256 the ~1 GB tensors are not kept.
  static constexpr size_t kBudget = size_t{256} << 20;
  static constexpr size_t kAlignment = 4096;
  std::mutex mutex_;
  std::multimap<size_t, void *> kept_;
  size_t kept_bytes_ = 0;
};

BufferPool &buffer_pool() {
  static BufferPool *pool = new BufferPool();  // never destroyed: kernels may run during exit
  return *pool;
}

// Owns the oneDNN objects of one call, released on every return path.
struct Scope {
  std::vector<BufferPool::Buffer> buffers;
  std::vector<dnnl_memory_desc_t> descs;
  std::vector<dnnl_memory_t> memories;
  std::vector<dnnl_primitive_desc_t> primitive_descs;
  std::vector<dnnl_primitive_t> primitives;
  dnnl_stream_t stream = nullptr;
  ~Scope() {
    for (auto p : primitives) api()->primitive_destroy(p);
    for (auto p : primitive_descs) api()->primitive_desc_destroy(p);
    for (auto m : memories) api()->memory_destroy(m);
    for (const auto &buffer : buffers) buffer_pool().give(buffer);
    for (auto d : descs) api()->memory_desc_destroy(d);
    if (stream != nullptr) api()->stream_destroy(stream);
  }
  dnnl_memory_desc_t plain(int ndims, const int64_t *dims) {  // row-major, as MindSpore's tensors
    dnnl_dims_t d{}, strides{};
    int64_t stride = 1;
    for (int i = ndims - 1; i >= 0; --i) {
      d[i] = dims[i];
      strides[i] = stride;
      stride *= dims[i];
    }
    dnnl_memory_desc_t md = nullptr;
    if (api()->memory_desc_create_with_strides(&md, ndims, d, kFloat32, strides) != kSuccess) return nullptr;
    descs.push_back(md);
    return md;
  }
  dnnl_memory_desc_t any(int ndims, const int64_t *dims) {  // oneDNN chooses the layout
    dnnl_dims_t d{};
    std::copy(dims, dims + ndims, d);
    dnnl_memory_desc_t md = nullptr;
    if (api()->memory_desc_create_with_tag(&md, ndims, d, kFloat32, kAnyLayout) != kSuccess) return nullptr;
    descs.push_back(md);
    return md;
  }
  dnnl_memory_desc_t named(int ndims, const int64_t *dims, const char *tag) {  // e.g. "aBcd8b"
    dnnl_dims_t d{};
    std::copy(dims, dims + ndims, d);
    dnnl_memory_desc_t md = nullptr;
    if (api()->memory_desc_create_with_string_tag == nullptr ||
        api()->memory_desc_create_with_string_tag(&md, ndims, d, kFloat32, tag) != kSuccess)
      return nullptr;
    descs.push_back(md);
    return md;
  }
  dnnl_memory_t memory(const_dnnl_memory_desc_t md, void *data) {  // data nullptr: a pooled buffer
    if (data == nullptr) {
      buffers.push_back(buffer_pool().take(api()->memory_desc_get_size(md)));
      data = buffers.back().data;
      if (data == nullptr) return nullptr;
    }
    dnnl_memory_t m = nullptr;
    if (api()->memory_create(&m, md, api()->engine, data) != kSuccess) return nullptr;
    memories.push_back(m);
    return m;
  }
  // Copies `from` (laid out as `from_md`) to `to` (as `to_md`); false on failure.
  bool reorder(const_dnnl_memory_desc_t from_md, dnnl_memory_t from, const_dnnl_memory_desc_t to_md,
               dnnl_memory_t to) {
    dnnl_primitive_desc_t pd = nullptr;
    if (api()->reorder_primitive_desc_create(&pd, from_md, api()->engine, to_md, api()->engine, nullptr) != kSuccess)
      return false;
    primitive_descs.push_back(pd);
    dnnl_primitive_t reorder = nullptr;
    if (api()->primitive_create(&reorder, pd) != kSuccess) return false;
    primitives.push_back(reorder);
    const dnnl_exec_arg_t args[] = {{kArgSrc, from}, {kArgDst, to}};
    return api()->primitive_execute(reorder, stream, 2, args) == kSuccess;
  }
  // The memory of a tensor in the layout `wanted`: the tensor itself when its plain layout is
  // that, else a reordered copy (or, for an output, a buffer to reorder from afterwards).
  dnnl_memory_t in_layout(const_dnnl_memory_desc_t plain_md, float *data, const_dnnl_memory_desc_t wanted,
                          bool copy_in) {
    dnnl_memory_t as_is = memory(plain_md, data);
    if (as_is == nullptr || api()->memory_desc_equal(plain_md, wanted)) return as_is;
    dnnl_memory_t other = memory(wanted, nullptr);
    if (other == nullptr || (copy_in && !reorder(plain_md, as_is, wanted, other))) return nullptr;
    return other;
  }
};

// The primitive descriptor of the convolution with these layouts, or nullptr where oneDNN has
// none, or only its reference implementation and `any_implementation` is false.
dnnl_primitive_desc_t convolution(Scope &scope, const_dnnl_memory_desc_t x, const_dnnl_memory_desc_t w,
                                  const_dnnl_memory_desc_t b, const_dnnl_memory_desc_t y, int64_t pad_h,
                                  int64_t pad_w, bool any_implementation) {
  const dnnl_dims_t strides{1, 1}, dilates{0, 0}, padding{pad_h, pad_w};
  dnnl_primitive_desc_t pd = nullptr;
  if (api()->convolution_forward_primitive_desc_create(&pd, api()->engine, kForwardInference, kConvolutionDirect, x, w,
                                                     b, y, strides, dilates, padding, padding, nullptr) != kSuccess)
    return nullptr;
  scope.primitive_descs.push_back(pd);
  if (any_implementation) return pd;
  const char *name = nullptr;
  if (api()->primitive_desc_query(pd, kQueryImplementation, 0, &name) != kSuccess || name == nullptr ||
      std::strncmp(name, "ref", 3) == 0)
    return nullptr;
  return pd;
}

}  // namespace

// Inputs: x (N, C_in, H, W), weight (C_out, C_in, KH, KW), bias (C_out),
// settings (3) = [pad_h, pad_w, threads]; output y (N, C_out, H + 2 pad_h - KH + 1, W + 2 pad_w - KW + 1).
// A video's temporal convolution comes as it is: x (N, C_in, T, H, W), weight (C_out, C_in, K, 1, 1),
// pad_w 0, y (N, C_out, T + 2 pad_h - K + 1, H, W), whose memory is that of the 4-D case over
// (T, H * W): a reshape to 4-D before and after would be copied twice by MindSpore.
// Returns non-zero (MindSpore raises) on other dtypes or shapes that do not fit, or when oneDNN
// refuses the problem.
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
  const int64_t samples = shapes[0][0], in_channels = shapes[0][1], height = shapes[0][2];
  const int64_t width = rank == 4 ? shapes[0][3] : shapes[0][3] * shapes[0][4];
  const int64_t out_channels = shapes[1][0], kernel_h = shapes[1][2], kernel_w = shapes[1][3];
  const int64_t pad_h = static_cast<int64_t>(settings[0]), pad_w = static_cast<int64_t>(settings[1]);
  if (rank == 5 && (kernel_w != 1 || shapes[1][4] != 1 || pad_w != 0)) return 3;
  const int64_t out_height = height + 2 * pad_h - kernel_h + 1, out_width = width + 2 * pad_w - kernel_w + 1;
  if (shapes[1][1] != in_channels || shapes[2][0] != out_channels || pad_h < 0 || pad_w < 0 || out_height < 0 ||
      out_width < 0 || shapes[4][0] != samples || shapes[4][1] != out_channels || shapes[4][2] != out_height)
    return 3;
  if (rank == 4 ? shapes[4][3] != out_width : (shapes[4][3] != shapes[0][3] || shapes[4][4] != shapes[0][4]))
    return 3;
  if (samples * out_channels * out_height * out_width == 0) return 0;
  if (api() == nullptr) return 20;  // no oneDNN instance could be loaded
  const int threads = std::max(1, static_cast<int>(settings[2]));

  Scope scope;
  Pool pool(threads);
  api()->threadpool_interop_set_max_concurrency(threads);  // what the primitives are planned for
  if (api()->threadpool_interop_stream_create(&scope.stream, api()->engine, &pool) != kSuccess) return 21;
  const int64_t x_dims[] = {samples, in_channels, height, width};
  const int64_t w_dims[] = {out_channels, in_channels, kernel_h, kernel_w};
  const int64_t b_dims[] = {out_channels};
  const int64_t y_dims[] = {samples, out_channels, out_height, out_width};
  const dnnl_memory_desc_t x_plain = scope.plain(4, x_dims), w_plain = scope.plain(4, w_dims);
  const dnnl_memory_desc_t b_plain = scope.plain(1, b_dims), y_plain = scope.plain(4, y_dims);
  const dnnl_memory_desc_t w_any = scope.any(4, w_dims);
  if (!x_plain || !w_plain || !b_plain || !y_plain || !w_any) return 22;

  // The channel-blocked layout of oneDNN's direct kernels (8 channels per block under AVX2, 16
  // under AVX-512), the one PyTorch's convolutions run in: left to itself, oneDNN 3.10 picks a
  // channels-last kernel that measured slower here (4x512x16x16 under AVX2: 37-41 ms against
  // 23-26; a 4x128 VAE decode at AVX-512: 4.94 s against 3.64 s). Where no direct kernel takes that
  // layout (only a reference one would), oneDNN chooses freely.
  const char *blocked = (api()->get_effective_cpu_isa() & kIsaAvx512Core) == kIsaAvx512Core ? "aBcd16b" : "aBcd8b";
  const dnnl_memory_desc_t x_blocked = scope.named(4, x_dims, blocked), y_blocked = scope.named(4, y_dims, blocked);
  dnnl_primitive_desc_t conv_pd = nullptr;
  if (x_blocked && y_blocked) conv_pd = convolution(scope, x_blocked, w_any, b_plain, y_blocked, pad_h, pad_w, false);
  if (conv_pd == nullptr) {
    const dnnl_memory_desc_t x_any = scope.any(4, x_dims), y_any = scope.any(4, y_dims);
    if (!x_any || !y_any) return 22;
    conv_pd = convolution(scope, x_any, w_any, b_plain, y_any, pad_h, pad_w, true);
  }
  if (conv_pd == nullptr) return 23;
  const_dnnl_memory_desc_t x_md = api()->primitive_desc_query_md(conv_pd, kQuerySrc, 0);
  const_dnnl_memory_desc_t w_md = api()->primitive_desc_query_md(conv_pd, kQueryWeights, 0);
  const_dnnl_memory_desc_t y_md = api()->primitive_desc_query_md(conv_pd, kQueryDst, 0);
  if (!x_md || !w_md || !y_md) return 24;

  float *y_data = static_cast<float *>(params[4]);
  dnnl_memory_t x = scope.in_layout(x_plain, static_cast<float *>(params[0]), x_md, true);
  dnnl_memory_t w = scope.in_layout(w_plain, static_cast<float *>(params[1]), w_md, true);
  dnnl_memory_t b = scope.memory(b_plain, params[2]);
  dnnl_memory_t y = scope.in_layout(y_plain, y_data, y_md, false);
  if (!x || !w || !b || !y) return 25;
  dnnl_primitive_t conv = nullptr;
  if (api()->primitive_create(&conv, conv_pd) != kSuccess) return 26;
  scope.primitives.push_back(conv);
  const dnnl_exec_arg_t args[] = {{kArgSrc, x}, {kArgWeights, w}, {kArgBias, b}, {kArgDst, y}};
  if (api()->primitive_execute(conv, scope.stream, 4, args) != kSuccess) return 27;
  if (!api()->memory_desc_equal(y_plain, y_md)) {
    dnnl_memory_t y_out = scope.memory(y_plain, y_data);
    if (y_out == nullptr || !scope.reorder(y_md, y, y_plain, y_out)) return 28;
  }
  return api()->stream_wait(scope.stream) == kSuccess ? 0 : 29;
}
