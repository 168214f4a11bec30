// The kernels' own instance of the oneDNN library MindSpore ships: convolutions (conv2d.cc) and
// GEMMs (linear.cc, attention.cc) run in it.
//
// Why a second instance: the device policy caps MindSpore's oneDNN at AVX2 on x86
// (ONEDNN_MAX_CPU_ISA, policy.cpu_kernel_isa_cap) because above it MindSpore's own convolutions,
// which hand oneDNN plain NCHW data, fall to a path of about 1 GFLOP/s. The cap is per library
// instance and read once, so the kernels here would inherit it; yet the AVX-512 convolutions they
// run on channel-blocked data are the fast ones (the VAE decode's: 3.6 s against 4.4 s under the
// cap). The build step puts a copy of MindSpore's libdnnl next to the kernel library
// (PRIVATE_ONEDNN in __init__.py); loaded from its own path, with its symbols bound to itself, it
// is a separate instance whose ISA this file lifts before its first use (its single-precision
// GEMM gained 5-40% on machine C's shapes). Without the copy the kernels use MindSpore's instance,
// capped as it is.
//
// oneDNN ships no headers inside MindSpore; the few declarations below are those of oneDNN 3's C
// API, whose functions and enumeration values are stable within the major version.
#pragma once

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>

typedef struct dnnl_engine *dnnl_engine_t;
typedef struct dnnl_stream *dnnl_stream_t;
typedef struct dnnl_memory_desc *dnnl_memory_desc_t;
typedef const struct dnnl_memory_desc *const_dnnl_memory_desc_t;
typedef struct dnnl_memory *dnnl_memory_t;
typedef struct dnnl_primitive_desc *dnnl_primitive_desc_t;
typedef struct dnnl_primitive *dnnl_primitive_t;
typedef int64_t dnnl_dims_t[12];
struct dnnl_exec_arg_t {
  int arg;
  dnnl_memory_t memory;
};

namespace dnnl {
namespace threadpool_interop {
// The layout of oneDNN's abstract threadpool (dnnl_threadpool_iface.hpp): the library calls these
// virtual functions in this order.
struct threadpool_iface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)> &fn) = 0;
  virtual uint64_t get_flags() const = 0;
  virtual void wait() = 0;  // later 3.x versions; never called for a synchronous pool
  virtual ~threadpool_iface() = default;
};
}  // namespace threadpool_interop
}  // namespace dnnl

namespace onednn {

constexpr int kSuccess = 0;
constexpr int kCpuEngine = 1;
constexpr int kFloat32 = 3;
constexpr int kAnyLayout = 1;
constexpr int kForwardInference = 96;
constexpr int kConvolutionDirect = 1;
constexpr int kQueryImplementation = 8;
constexpr int kQuerySrc = 129, kQueryWeights = 131, kQueryDst = 133;
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgBias = 41;
constexpr int kIsaNoLimit = 0, kIsaAvx512Core = 0x27;

// The functions the kernels call, resolved in one instance of the library.
struct Api {
  int (*engine_create)(dnnl_engine_t *, int kind, size_t index);
  int (*threadpool_interop_stream_create)(dnnl_stream_t *, dnnl_engine_t, void *threadpool);
  int (*threadpool_interop_set_max_concurrency)(int);
  int (*stream_wait)(dnnl_stream_t);
  int (*stream_destroy)(dnnl_stream_t);
  int (*memory_desc_create_with_strides)(dnnl_memory_desc_t *, int ndims, const dnnl_dims_t dims, int data_type,
                                         const dnnl_dims_t strides);
  int (*memory_desc_create_with_tag)(dnnl_memory_desc_t *, int ndims, const dnnl_dims_t dims, int data_type,
                                     int tag);
  // Exported beside the public API (the library's own tools use it): a layout by its name,
  // "aBcd8b"; nullptr where the library lacks it.
  int (*memory_desc_create_with_string_tag)(dnnl_memory_desc_t *, int ndims, const dnnl_dims_t dims,
                                            int data_type, const char *tag);
  int (*memory_desc_equal)(const_dnnl_memory_desc_t, const_dnnl_memory_desc_t);
  size_t (*memory_desc_get_size)(const_dnnl_memory_desc_t);
  int (*memory_desc_destroy)(dnnl_memory_desc_t);
  int (*memory_create)(dnnl_memory_t *, const_dnnl_memory_desc_t, dnnl_engine_t, void *handle);
  int (*memory_destroy)(dnnl_memory_t);
  int (*convolution_forward_primitive_desc_create)(dnnl_primitive_desc_t *, dnnl_engine_t, int prop_kind,
                                                   int alg_kind, const_dnnl_memory_desc_t src,
                                                   const_dnnl_memory_desc_t weights, const_dnnl_memory_desc_t bias,
                                                   const_dnnl_memory_desc_t dst, const dnnl_dims_t strides,
                                                   const dnnl_dims_t dilates, const dnnl_dims_t padding_l,
                                                   const dnnl_dims_t padding_r, const void *attr);
  int (*reorder_primitive_desc_create)(dnnl_primitive_desc_t *, const_dnnl_memory_desc_t src, dnnl_engine_t,
                                       const_dnnl_memory_desc_t dst, dnnl_engine_t, const void *attr);
  int (*primitive_desc_query)(const dnnl_primitive_desc_t, int what, int index, void *result);
  const_dnnl_memory_desc_t (*primitive_desc_query_md)(const dnnl_primitive_desc_t, int what, int index);
  int (*primitive_desc_destroy)(dnnl_primitive_desc_t);
  int (*primitive_create)(dnnl_primitive_t *, const dnnl_primitive_desc_t);
  int (*primitive_execute)(const dnnl_primitive_t, dnnl_stream_t, int nargs, const dnnl_exec_arg_t *args);
  int (*primitive_destroy)(dnnl_primitive_t);
  int (*sgemm)(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc);  // row-major
  int (*set_max_cpu_isa)(int isa);
  int (*get_effective_cpu_isa)();
  dnnl_engine_t engine;  // the instance's CPU engine
};

namespace detail {

// `handle`'s symbols into `api`; false if one is missing.
inline bool resolve(void *handle, Api &api) {
  bool complete = true;
  auto take = [&](auto &slot, const char *name) {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(dlsym(handle, name));
    complete = complete && slot != nullptr;
  };
  take(api.engine_create, "dnnl_engine_create");
  take(api.threadpool_interop_stream_create, "dnnl_threadpool_interop_stream_create");
  take(api.threadpool_interop_set_max_concurrency, "dnnl_threadpool_interop_set_max_concurrency");
  take(api.stream_wait, "dnnl_stream_wait");
  take(api.stream_destroy, "dnnl_stream_destroy");
  take(api.memory_desc_create_with_strides, "dnnl_memory_desc_create_with_strides");
  take(api.memory_desc_create_with_tag, "dnnl_memory_desc_create_with_tag");
  take(api.memory_desc_equal, "dnnl_memory_desc_equal");
  take(api.memory_desc_get_size, "dnnl_memory_desc_get_size");
  take(api.memory_desc_destroy, "dnnl_memory_desc_destroy");
  take(api.memory_create, "dnnl_memory_create");
  take(api.memory_destroy, "dnnl_memory_destroy");
  take(api.convolution_forward_primitive_desc_create, "dnnl_convolution_forward_primitive_desc_create");
  take(api.reorder_primitive_desc_create, "dnnl_reorder_primitive_desc_create");
  take(api.primitive_desc_query, "dnnl_primitive_desc_query");
  take(api.primitive_desc_query_md, "dnnl_primitive_desc_query_md");
  take(api.primitive_desc_destroy, "dnnl_primitive_desc_destroy");
  take(api.primitive_create, "dnnl_primitive_create");
  take(api.primitive_execute, "dnnl_primitive_execute");
  take(api.primitive_destroy, "dnnl_primitive_destroy");
  take(api.sgemm, "dnnl_sgemm");
  take(api.set_max_cpu_isa, "dnnl_set_max_cpu_isa");
  take(api.get_effective_cpu_isa, "dnnl_get_effective_cpu_isa");
  // Outside the public API, so not required: without it the convolutions take oneDNN's layouts.
  api.memory_desc_create_with_string_tag = reinterpret_cast<decltype(api.memory_desc_create_with_string_tag)>(
      dlsym(handle, "dnnl_memory_desc_create_with_string_tag"));
  return complete;
}

inline void anchor() {}  // an address inside this library, to find its directory

// The private copy beside this library, loaded as its own instance (nullptr if absent).
inline void *private_instance() {
  Dl_info self{};
  if (dladdr(reinterpret_cast<void *>(&anchor), &self) == 0 || self.dli_fname == nullptr) return nullptr;
  std::string path(self.dli_fname);
  path = path.substr(0, path.find_last_of('/') + 1) + "libsvd_ms_onednn.so";
  return dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
}

inline const Api *load() {
  static Api api{};
  void *handle = private_instance();
  const bool own = handle != nullptr;
  if (!own) handle = dlopen("libdnnl.so.3", RTLD_NOW | RTLD_NOLOAD);  // MindSpore's, linked by this library
  if (handle == nullptr || !resolve(handle, api)) return nullptr;
  // Only the private instance is uncapped: MindSpore's keeps the policy's cap.
  if (own) api.set_max_cpu_isa(kIsaNoLimit);
  if (api.engine_create(&api.engine, kCpuEngine, 0) != kSuccess) return nullptr;
  return &api;
}

}  // namespace detail

// The loaded instance, or nullptr if none could be (then the kernels report failure).
inline const Api *api() {
  static const Api *loaded = detail::load();
  return loaded;
}

// Row-major single-precision GEMM, C = alpha op(A) op(B) + beta C, in the kernels' instance;
// oneDNN's status, or kNoLibrary when no instance could be loaded.
constexpr int kNoLibrary = 99;
inline int sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                 const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  const Api *loaded = api();
  if (loaded == nullptr) return kNoLibrary;
  return loaded->sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace onednn
