// Exact (erf) GELU on float32 for MindSpore's CPU backend, called through ops.Custom(func_type="aot").
//
// Why: MindSpore 2.10's CPU Erf kernel evaluates erff one value at a time (about 8 ns per value
// on a 2-core AVX-512 host, 16x PyTorch's whole GELU). This loop lets the compiler call glibc's
// vector erff (libmvec, glibc >= 2.35), 8 values per call with AVX2, accurate to a few ulp.
//
// Built by scripts/setup.sh (python -m svd_ms.modules.cpu_kernels); the flags are in
// svd_ms/modules/cpu_kernels/__init__.py. No -ffast-math: GCC 12 links crtfastmath into shared
// objects built with it, which would switch the whole process to flush-to-zero.
#include <cstdint>
#include <cstring>

extern "C" {
// glibc's own declaration carries no SIMD variant unless __FAST_MATH__ is defined.
#pragma omp declare simd notinbranch
float erff(float) noexcept;
}

namespace {

constexpr float kHalf = 0.5f;
constexpr float kInvSqrt2 = 0.70710678118654752440f;

int64_t element_count(int ndim, const int64_t *shape) {
  int64_t count = 1;
  for (int axis = 0; axis < ndim; ++axis) count *= shape[axis];
  return count;
}

bool is_float32(const char *dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "float") == 0;
}

inline float exact_gelu(float value) { return kHalf * value * (1.0f + erff(value * kInvSqrt2)); }

}  // namespace

// One input x, one output y of x's shape: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))).
// Returns non-zero (MindSpore raises) for anything but one float32 input and one float32 output.
extern "C" int ExactGeluFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void * /*stream*/, void * /*extra*/) {
  if (nparam != 2 || !is_float32(dtypes[0]) || !is_float32(dtypes[1])) return 1;
  const int64_t count = element_count(ndims[0], shapes[0]);
  if (count != element_count(ndims[1], shapes[1])) return 2;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) y[i] = exact_gelu(x[i]);
  return 0;
}

// The gated GELU of sgm's GEGLU in one pass: h (..., 2n) -> y (..., n), y = h[..., :n] * gelu(h[..., n:]).
// Reading h once spares MindSpore's copies of the two strided halves (a chunk view is not contiguous).
extern "C" int GatedExactGeluFloat32(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void * /*stream*/, void * /*extra*/) {
  if (nparam != 2 || !is_float32(dtypes[0]) || !is_float32(dtypes[1]) || ndims[0] < 1) return 1;
  const int64_t width = shapes[0][ndims[0] - 1];
  if (width % 2 != 0) return 2;
  const int64_t half = width / 2;
  const int64_t rows = element_count(ndims[0], shapes[0]) / (width == 0 ? 1 : width);
  if (rows * half != element_count(ndims[1], shapes[1])) return 3;
  const float *h = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  for (int64_t row = 0; row < rows; ++row) {
    const float *value = h + row * width;
    const float *gate = value + half;
    float *out = y + row * half;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) out[i] = value[i] * exact_gelu(gate[i]);
  }
  return 0;
}
