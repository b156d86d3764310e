// Fused float32 CPU kernels for ms_ddpm's optional fast CPU path (docs/fastconv.md), in MindSpore's
// Custom(func_type='aot') calling convention; compiled with onednn_conv.cc into one library by
// ms_ddpm/fastconv/__init__.py.
//
// MindSpore 2.8's float32 exp is a fast approximation (~30 ulp), so the stock twins evaluate
// softmax and SiLU in float64 and round once: accurate, but the float64 softmax and its unfused
// backward (ReduceSum, Mul, Sub, Transpose, Cast) were ~20% of a small U-Net's compiled train
// step.  These kernels compute what torch's CPU kernels compute: an exp accurate to about 1 ulp
// (the Cody-Waite reduction and degree-6 polynomial of SLEEF's expf_u10, which ATen's vectorised
// exp calls), float32 accumulation in 16 lanes, one pass per row.
//
//   ms_ddpm_softmax_fwd(x, cfg) -> y                 cfg = [axis] (non-negative)
//   ms_ddpm_softmax_bwd(y, dy, cfg) -> dx            dx = y * (dy - sum(dy * y, axis))
//   ms_ddpm_l2norm_fwd(x, cfg) -> y                  y = x / max(||x||_axis, 1e-12)   (F.normalize; RMSNorm)
//   ms_ddpm_l2norm_bwd(x, y, dy, cfg) -> dx          dx = (dy - y * sum(dy * y, axis)) / ||x||  (dy / eps where ||x|| <= eps)
//   ms_ddpm_bmm_nn(a, b) -> a @ b,  ms_ddpm_bmm_nt(a, b) -> a @ b^T,  ms_ddpm_bmm_tn(a, b) -> a^T @ b
//                                                    batched over equal leading dims, oneDNN's sgemm per matrix
//                                                    (MindSpore 2.8's BatchMatMul runs the attention backward's
//                                                    long-K products at ~1/4 of its forward speed)
//   ms_ddpm_silu_fwd(x) -> y                         y = x / (1 + exp(-x))
//   ms_ddpm_silu_bwd(x, dy) -> dx                    s = 1 / (1 + exp(-x)); dx = dy * s * (1 + x * (1 - s))
//   ms_ddpm_adam(g, p, m, v, cfg) -> (p', m', v')    torch's Adam step in one pass, cfg = (1 - beta1, beta2,
//                                                    1 - beta2, eps, step_size, sqrt(bias_correction2)):
//                                                    the stock twin's float32 operations in its order
//                                                    (ms_ddpm/training/step.py), not contracted to FMAs
//   ms_ddpm_affine_fwd[_b](x, a, [b,] cfg) -> y         y = (x * a [+ b]) * post, cfg = [post]; x (B, C, ...), a and
//                                                    b (B or 1, C, 1, ...): RMSNorm's gain (x * g * sqrt(C)) and
//                                                    the Blocks' scale / shift (x * (scale + 1) + shift)
//   ms_ddpm_affine_bwd[_b](dy, x, a, [b,] cfg) -> (dx, da[, db])
//                                                    t = dy * post; dx = t * a; da, db: the sums of t * x and of t
//                                                    over the axes a and b broadcast along (float64 accumulation;
//                                                    MindSpore 2.8's ReduceSum took 2-4 ms for such a sum over 1M
//                                                    elements, torch 0.05 ms)

#include <cmath>
#include <cstdint>
#include <cstring>

#include "oneapi/dnnl/dnnl.h"
#include "one_thread.h"

namespace {

constexpr int LANES = 16;

// Below this many elements a kernel runs on the calling thread: with GOMP_SPINCOUNT low
// (ms_ddpm_tools.runtime) each OpenMP parallel region costs ~45-57 us of futex wake-up on the
// 2-core machine, more than the whole softmax of a small attention map.  Every row / column block
// is computed the same on any thread, so the results do not depend on it.
constexpr int64_t PAR_MIN = 32768;

// Compiled with -march=native (ms_ddpm/fastconv/__init__.py): the 16-lane loops below vectorise
// to the CPU's widest SIMD (a portable target_clones build ran them 5-25x slower).

inline float pow2i(int q) {
  int32_t bits = (q + 0x7f) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// SLEEF's xexpf (u10): |error| <= 1 ulp over the whole float range.
inline float expf_u10(float d) {
  float q = std::rint(d * 1.442695040888963407359924681001892137f);
  int qi = static_cast<int>(q);
  float s = std::fma(q, -0.693145751953125f, d);
  s = std::fma(q, -1.428606765330187045e-06f, s);
  float u = 0.000198527617612853646278381f;
  u = std::fma(u, s, 0.00139304355252534151077271f);
  u = std::fma(u, s, 0.00833336077630519866943359f);
  u = std::fma(u, s, 0.0416664853692054748535156f);
  u = std::fma(u, s, 0.166666671633720397949219f);
  u = std::fma(u, s, 0.5f);
  u = std::fma(s * s, u, s + 1.0f);
  int h = qi >> 1;
  u = u * pow2i(h) * pow2i(qi - h);
  u = d < -104.0f ? 0.0f : u;
  u = d > 104.0f ? INFINITY : u;
  return u;
}

// The strided layouts (outer, n, inner) with inner > 1: body(base, w) for every block of w <= LANES
// adjacent columns (base: the block's first element), the blocks spread over the OpenMP threads;
// each body walks its n rows, so the work on the `w` columns vectorises.
template <typename Body>
inline void strided_blocks(int64_t outer, int64_t n, int64_t inner, Body body) {
  int64_t blocks = (inner + LANES - 1) / LANES;
#pragma omp parallel for schedule(static) if (outer * n * inner >= PAR_MIN)
  for (int64_t ob = 0; ob < outer * blocks; ++ob) {
    int64_t o = ob / blocks, c0 = (ob % blocks) * LANES;
    body(o * n * inner + c0, static_cast<int>(inner - c0 < LANES ? inner - c0 : LANES));
  }
}

// softmax along an axis of length n with elements `inner` apart, for `outer` independent blocks.
void softmax_fwd(const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n >= PAR_MIN)
    for (int64_t o = 0; o < outer; ++o) {
      const float *xr = x + o * n;
      float *yr = y + o * n;
      float mx[LANES], sm[LANES];
      for (int j = 0; j < LANES; ++j) { mx[j] = -INFINITY; sm[j] = 0.0f; }
      int64_t i = 0;
      for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) mx[j] = xr[i + j] > mx[j] ? xr[i + j] : mx[j];
      float m = -INFINITY;
      for (int j = 0; j < LANES; ++j) m = mx[j] > m ? mx[j] : m;
      for (; i < n; ++i) m = xr[i] > m ? xr[i] : m;
      for (i = 0; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) {
          float e = expf_u10(xr[i + j] - m);
          yr[i + j] = e;
          sm[j] += e;
        }
      float s = 0.0f;
      for (int j = 0; j < LANES; ++j) s += sm[j];
      for (; i < n; ++i) { float e = expf_u10(xr[i] - m); yr[i] = e; s += e; }
      float r = 1.0f / s;
      for (i = 0; i < n; ++i) yr[i] *= r;
    }
    return;
  }
  strided_blocks(outer, n, inner, [&](int64_t base, int w) {     // strided axis: across `inner`
    const float *xb = x + base;
    float *yb = y + base;
    float mx[LANES], sm[LANES];
    for (int j = 0; j < LANES; ++j) { mx[j] = -INFINITY; sm[j] = 0.0f; }
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) { float v = xb[i * inner + j]; mx[j] = v > mx[j] ? v : mx[j]; }
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) {
        float e = expf_u10(xb[i * inner + j] - mx[j]);
        yb[i * inner + j] = e;
        sm[j] += e;
      }
    for (int j = 0; j < w; ++j) sm[j] = 1.0f / sm[j];
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) yb[i * inner + j] *= sm[j];
  });
}

void softmax_bwd(const float *y, const float *dy, float *dx, int64_t outer, int64_t n, int64_t inner) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * n >= PAR_MIN)
    for (int64_t o = 0; o < outer; ++o) {
      const float *yr = y + o * n, *gr = dy + o * n;
      float *dr = dx + o * n;
      float sm[LANES];
      for (int j = 0; j < LANES; ++j) sm[j] = 0.0f;
      int64_t i = 0;
      for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; ++j) sm[j] += gr[i + j] * yr[i + j];
      float s = 0.0f;
      for (int j = 0; j < LANES; ++j) s += sm[j];
      for (; i < n; ++i) s += gr[i] * yr[i];
      for (i = 0; i < n; ++i) dr[i] = yr[i] * (gr[i] - s);
    }
    return;
  }
  strided_blocks(outer, n, inner, [&](int64_t base, int w) {
    float sm[LANES];
    for (int j = 0; j < LANES; ++j) sm[j] = 0.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) sm[j] += dy[base + i * inner + j] * y[base + i * inner + j];
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) {
        int64_t k = base + i * inner + j;
        dx[k] = y[k] * (dy[k] - sm[j]);
      }
  });
}

// F.normalize(x, dim=axis): the sum of squares in float32, channel after channel (the order of
// torch's strided norm and of the stock twins' ones-row matmul), vectorised across `inner`.
constexpr float NORM_EPS = 1e-12f;

void l2norm_fwd(const float *x, float *y, int64_t outer, int64_t n, int64_t inner) {
  strided_blocks(outer, n, inner, [&](int64_t base, int w) {
    float ss[LANES];
    for (int j = 0; j < LANES; ++j) ss[j] = 0.0f;
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) { float v = x[base + i * inner + j]; ss[j] += v * v; }
    for (int j = 0; j < w; ++j) { float r = std::sqrt(ss[j]); ss[j] = r > NORM_EPS ? r : NORM_EPS; }
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) y[base + i * inner + j] = x[base + i * inner + j] / ss[j];
  });
}

void l2norm_bwd(const float *x, const float *y, const float *dy, float *dx, int64_t outer, int64_t n,
                int64_t inner) {
  strided_blocks(outer, n, inner, [&](int64_t base, int w) {
    float ss[LANES], sd[LANES];
    for (int j = 0; j < LANES; ++j) { ss[j] = 0.0f; sd[j] = 0.0f; }
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) {
        int64_t k = base + i * inner + j;
        ss[j] += x[k] * x[k];
        sd[j] += dy[k] * y[k];
      }
    for (int j = 0; j < w; ++j) {
      float r = std::sqrt(ss[j]);
      if (r <= NORM_EPS) { ss[j] = NORM_EPS; sd[j] = 0.0f; } else { ss[j] = r; }   // clamped: no gradient through the norm
    }
    for (int64_t i = 0; i < n; ++i)
      for (int j = 0; j < w; ++j) {
        int64_t k = base + i * inner + j;
        dx[k] = (dy[k] - y[k] * sd[j]) / ss[j];
      }
  });
}

void silu_fwd(const float *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + expf_u10(-x[i]));
}

void silu_bwd(const float *x, const float *dy, float *dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; ++i) {
    float s = 1.0f / (1.0f + expf_u10(-x[i]));
    dx[i] = dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
  }
}

// C[i] = op(A[i]) @ op(B[i]) for every matrix i of the batch; row-major; A is (M, K) or (K, M) when ta.
void bmm(bool ta, bool tb, const float *a, const float *b, float *c, int64_t batch, int64_t m, int64_t n, int64_t k) {
  const int64_t sa = m * k, sb = k * n, sc = m * n;
  const int64_t lda = ta ? m : k, ldb = tb ? k : n;
  auto one = [&](int64_t i) {
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a + i * sa, lda, b + i * sb, ldb, 0.0f, c + i * sc, n);
  };
  if (batch * m * n * k < 32 * PAR_MIN) {
    // under ~1M multiply-adds in all (an 8x8 attention map's batch): on this thread alone.  oneDNN's
    // sgemm called outside a parallel region opens its own over every OpenMP thread, one per
    // matrix: 24 regions a step of a small U-Net's sampling loop, each waiting for a worker to be
    // scheduled beside MindSpore's threads on 2 cores (the step 1.4-1.8x as long).
    OneThread seq;
    for (int64_t i = 0; i < batch; ++i) one(i);
    return;
  }
  if (batch == 1) {
    one(0);             // sgemm over the pool
    return;
  }
  // one matrix per thread (oneDNN's sgemm runs single-threaded inside a parallel region)
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch; ++i) one(i);
}

int bmm_launch(bool ta, bool tb, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  if (nparam != 3) return 1;
  for (int i = 0; i < 3; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return 2;
  int nd = ndims[0];
  if (nd < 2 || ndims[1] != nd || ndims[2] != nd) return 3;
  const int64_t *sa = shapes[0], *sb = shapes[1];
  int64_t batch = 1;
  for (int i = 0; i < nd - 2; ++i) {
    if (sa[i] != sb[i]) return 3;
    batch *= sa[i];
  }
  int64_t m = ta ? sa[nd - 1] : sa[nd - 2], k = ta ? sa[nd - 2] : sa[nd - 1];
  int64_t kb = tb ? sb[nd - 1] : sb[nd - 2], n = tb ? sb[nd - 2] : sb[nd - 1];
  if (k != kb) return 3;
  float *c = static_cast<float *>(params[2]);
  if (batch * m * n == 0) return 0;
  if (k == 0) { std::memset(c, 0, sizeof(float) * batch * m * n); return 0; }
  bmm(ta, tb, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]), c, batch, m, n, k);
  return 0;
}

int64_t numel(int nd, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < nd; ++i) n *= shape[i];
  return n;
}

bool all_f32(int nparam, const char **dtypes, int skip) {
  for (int i = 0; i < nparam; ++i)
    if (i != skip && std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

// (outer, n, inner) of `axis` in a tensor of shape `shape`; false if the axis is out of range
bool split_axis(int nd, const int64_t *shape, int64_t axis, int64_t &outer, int64_t &n, int64_t &inner) {
  if (axis < 0 || axis >= nd) return false;
  outer = 1; inner = 1; n = shape[axis];
  for (int i = 0; i < axis; ++i) outer *= shape[i];
  for (int i = static_cast<int>(axis) + 1; i < nd; ++i) inner *= shape[i];
  return true;
}

// The along-an-axis kernels: `nin` float32 tensor inputs (all of the first one's shape), then the
// int64 cfg [axis], then the output; `body(inputs, output, outer, n, inner)`.
template <typename Body>
int axis_launch(int nin, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, Body body) {
  if (nparam != nin + 2 || !all_f32(nparam, dtypes, nin)) return 2;
  int64_t outer, n, inner;
  if (!split_axis(ndims[0], shapes[0], static_cast<const int64_t *>(params[nin])[0], outer, n, inner)) return 4;
  if (outer * n * inner == 0) return 0;
  const float *in[3] = {nullptr, nullptr, nullptr};
  for (int i = 0; i < nin; ++i) in[i] = static_cast<const float *>(params[i]);
  body(in, static_cast<float *>(params[nin + 1]), outer, n, inner);
  return 0;
}

}  // namespace

#define MSD_AOT_ARGS int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream_, void *extra
#define MSD_AXIS_KERNEL(name, nin, call)                                                      \
  extern "C" int name(MSD_AOT_ARGS) {                                                          \
    return axis_launch(nin, nparam, params, ndims, shapes, dtypes,                             \
                       [](const float **in, float *out, int64_t o, int64_t n, int64_t i) { call; }); \
  }

MSD_AXIS_KERNEL(ms_ddpm_softmax_fwd, 1, softmax_fwd(in[0], out, o, n, i))
MSD_AXIS_KERNEL(ms_ddpm_softmax_bwd, 2, softmax_bwd(in[0], in[1], out, o, n, i))
MSD_AXIS_KERNEL(ms_ddpm_l2norm_fwd, 1, l2norm_fwd(in[0], out, o, n, i))
MSD_AXIS_KERNEL(ms_ddpm_l2norm_bwd, 3, l2norm_bwd(in[0], in[1], in[2], out, o, n, i))

extern "C" int ms_ddpm_bmm_nn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream_, void *extra) {
  return bmm_launch(false, false, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_bmm_nt(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream_, void *extra) {
  return bmm_launch(false, true, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_bmm_tn(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                              void *stream_, void *extra) {
  return bmm_launch(true, false, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_silu_fwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream_, void *extra) {
  if (nparam != 2 || !all_f32(nparam, dtypes, -1)) return 2;
  silu_fwd(static_cast<const float *>(params[0]), static_cast<float *>(params[1]), numel(ndims[0], shapes[0]));
  return 0;
}

extern "C" int ms_ddpm_silu_bwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream_, void *extra) {
  if (nparam != 3 || !all_f32(nparam, dtypes, -1)) return 2;
  silu_bwd(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
           static_cast<float *>(params[2]), numel(ndims[0], shapes[0]));
  return 0;
}


namespace {

// One pass over a parameter instead of ~17 MindSpore ops (each a pass over memory and a kernel
// launch); fp-contract=off: the same roundings as the stock twin's separate multiplies and adds.
__attribute__((optimize("fp-contract=off"))) void adam_step(const float *g, const float *p, const float *m,
                                                            const float *v, const float *c, float *po, float *mo,
                                                            float *vo, int64_t n) {
  const float omb1 = c[0], b2 = c[1], omb2 = c[2], eps = c[3], step = c[4], bc2 = c[5];
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float mi = m[i] + omb1 * (g[i] - m[i]);
    const float vi = v[i] * b2 + omb2 * g[i] * g[i];
    const float denom = std::sqrt(vi) / bc2 + eps;
    mo[i] = mi;
    vo[i] = vi;
    po[i] = p[i] - step * (mi / denom);
  }
}

}  // namespace

extern "C" int ms_ddpm_adam(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                            void *stream_, void *extra) {
  if (nparam != 8 || !all_f32(nparam, dtypes, -1)) return 2;
  const int64_t n = numel(ndims[1], shapes[1]);
  if (numel(ndims[0], shapes[0]) != n || numel(ndims[2], shapes[2]) != n || numel(ndims[3], shapes[3]) != n ||
      numel(ndims[4], shapes[4]) != 6)
    return 2;
  adam_step(static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
            static_cast<const float *>(params[2]), static_cast<const float *>(params[3]),
            static_cast<const float *>(params[4]), static_cast<float *>(params[5]), static_cast<float *>(params[6]),
            static_cast<float *>(params[7]), n);
  return 0;
}


namespace {

// (x * a [+ b]) * post and its backward, over x viewed as (B, C, S): one (b, c) plane of S
// elements at a time, a and b indexed per plane (their batch extent B or 1).  fp-contract=off: the
// roundings of the stock twins' separate multiply and add.  The reductions of the backward add
// exact float64 products in 8 float64 lanes per plane, then the planes of one channel in batch
// order: the same result on any number of threads.
struct Affine {
  int64_t B, C, S, ab, bb;   // ab / bb: the batch extent of a / b (1 or B; bb 0: no b)
};

__attribute__((optimize("fp-contract=off"))) void affine_fwd(const Affine &d, const float *x, const float *a,
                                                             const float *b, float post, float *y) {
#pragma omp parallel for schedule(static) if (d.B * d.C * d.S >= PAR_MIN)
  for (int64_t p = 0; p < d.B * d.C; ++p) {
    const int64_t bi = p / d.C, c = p % d.C;
    const float av = a[(d.ab == 1 ? 0 : bi) * d.C + c];
    const float *xp = x + p * d.S;
    float *yp = y + p * d.S;
    if (b) {
      const float bv = b[(d.bb == 1 ? 0 : bi) * d.C + c];
      for (int64_t i = 0; i < d.S; ++i) yp[i] = (xp[i] * av + bv) * post;
    } else {
      for (int64_t i = 0; i < d.S; ++i) yp[i] = (xp[i] * av) * post;
    }
  }
}

__attribute__((optimize("fp-contract=off"))) void affine_bwd(const Affine &d, const float *dy, const float *x,
                                                             const float *a, float post, float *dx, float *da,
                                                             float *db) {
  const int64_t planes = d.B * d.C;
  double *sums = new double[2 * planes];       // per plane: sum t * x, sum t
#pragma omp parallel for schedule(static) if (planes * d.S >= PAR_MIN)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t bi = p / d.C, c = p % d.C;
    const float av = a[(d.ab == 1 ? 0 : bi) * d.C + c];
    const float *gp = dy + p * d.S, *xp = x + p * d.S;
    float *dp = dx + p * d.S;
    double sx[8] = {0, 0, 0, 0, 0, 0, 0, 0}, st[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= d.S; i += 8)
      for (int j = 0; j < 8; ++j) {
        const float t = gp[i + j] * post;
        dp[i + j] = t * av;
        sx[j] += static_cast<double>(t) * static_cast<double>(xp[i + j]);
        st[j] += static_cast<double>(t);
      }
    for (; i < d.S; ++i) {
      const float t = gp[i] * post;
      dp[i] = t * av;
      sx[0] += static_cast<double>(t) * static_cast<double>(xp[i]);
      st[0] += static_cast<double>(t);
    }
    double s1 = 0, s2 = 0;
    for (int j = 0; j < 8; ++j) { s1 += sx[j]; s2 += st[j]; }
    sums[2 * p] = s1;
    sums[2 * p + 1] = s2;
  }
  // the per-plane sums into a's and b's shapes: over the batch where they broadcast along it
  for (int which = 0; which < (db ? 2 : 1); ++which) {
    const int64_t extent = which == 0 ? d.ab : d.bb;
    float *out = which == 0 ? da : db;
    for (int64_t k = 0; k < extent * d.C; ++k) {
      double s = 0;
      if (extent == 1)
        for (int64_t bi = 0; bi < d.B; ++bi) s += sums[2 * (bi * d.C + k) + which];
      else
        s = sums[2 * k + which];
      out[k] = static_cast<float>(s);
    }
  }
  delete[] sums;
}

// a (or b) of shape (E, C, 1, ...) against x (B, C, ...), E = 1 or B: E, or 0 if it does not fit
int64_t affine_extent(int nd, const int64_t *xs, int ndp, const int64_t *ps) {
  if (ndp != nd || nd < 2 || ps[1] != xs[1] || (ps[0] != 1 && ps[0] != xs[0])) return 0;
  for (int i = 2; i < nd; ++i)
    if (ps[i] != 1) return 0;
  return ps[0];
}

// params: the tensor inputs (x or dy, x, then a [, b]), cfg [post], outputs; first: index of x
int affine_launch(bool backward, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  const int first = backward ? 1 : 0;
  const int nin = backward ? (nparam == 8 ? 5 : 4) : (nparam == 5 ? 4 : 3);   // tensor inputs with cfg
  const bool has_b = backward ? nparam == 8 : nparam == 5;
  if (backward ? (nparam != 6 && nparam != 8) : (nparam != 4 && nparam != 5)) return 1;
  if (!all_f32(nparam, dtypes, -1)) return 2;
  const int nd = ndims[first];
  const int64_t *xs = shapes[first];
  Affine d{xs[0], xs[1], 1, 0, 0};
  for (int i = 2; i < nd; ++i) d.S *= xs[i];
  d.ab = affine_extent(nd, xs, ndims[first + 1], shapes[first + 1]);
  if (has_b) d.bb = affine_extent(nd, xs, ndims[first + 2], shapes[first + 2]);
  if (d.ab == 0 || (has_b && d.bb == 0) || numel(ndims[nin - 1], shapes[nin - 1]) != 1) return 3;
  if (backward && numel(ndims[0], shapes[0]) != numel(nd, xs)) return 3;
  const float post = static_cast<const float *>(params[nin - 1])[0];
  const float *a = static_cast<const float *>(params[first + 1]);
  if (!backward) {
    if (d.B * d.C * d.S == 0) return 0;
    affine_fwd(d, static_cast<const float *>(params[0]), a,
               has_b ? static_cast<const float *>(params[2]) : nullptr, post, static_cast<float *>(params[nin]));
    return 0;
  }
  float *dx = static_cast<float *>(params[nin]), *da = static_cast<float *>(params[nin + 1]);
  float *db = has_b ? static_cast<float *>(params[nin + 2]) : nullptr;
  if (d.B * d.C * d.S == 0) {           // empty x: zero sums
    std::memset(da, 0, sizeof(float) * d.ab * d.C);
    if (db) std::memset(db, 0, sizeof(float) * d.bb * d.C);
    return 0;
  }
  affine_bwd(d, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]), a, post, dx, da, db);
  return 0;
}

}  // namespace

// one symbol per signature (MindSpore keys a Custom op's shape inference by its function name)
extern "C" int ms_ddpm_affine_fwd(MSD_AOT_ARGS) { return affine_launch(false, nparam, params, ndims, shapes, dtypes); }
extern "C" int ms_ddpm_affine_fwd_b(MSD_AOT_ARGS) { return affine_launch(false, nparam, params, ndims, shapes, dtypes); }
extern "C" int ms_ddpm_affine_bwd(MSD_AOT_ARGS) { return affine_launch(true, nparam, params, ndims, shapes, dtypes); }
extern "C" int ms_ddpm_affine_bwd_b(MSD_AOT_ARGS) { return affine_launch(true, nparam, params, ndims, shapes, dtypes); }
