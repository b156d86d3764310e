// oneDNN 3.x direct convolution (1D / 2D / 3D; forward, backward-data, backward-weights) as
// MindSpore Custom(func_type='aot') CPU kernels.  Part of ms_ddpm's optional fast CPU path
// (docs/fastconv.md); compiled on first use by ms_ddpm/fastconv/__init__.py.
//
// Every kernel takes, after its tensors, a 1-D int64 "cfg" tensor: [nsp, stride_1..stride_nsp,
// pad_1..pad_nsp] (nsp = number of spatial dims, torch's symmetric zero padding).  Tensors are
// float32 in torch's plain layouts (x: N,C,spatial; w: O,I,kernel).  The convolution itself uses
// format_tag::any, so oneDNN picks its blocked kernel (torch's choice: jit:avx512_core); reorders
// in and out are cached with the primitive, one entry per (kind, shapes, cfg).
//
//   ms_ddpm_conv_fwd(x, w, cfg) -> y
//   ms_ddpm_conv_fwd_bias(x, w, b, cfg) -> y            (the bias added inside the kernel, as torch's)
//   ms_ddpm_conv_bwd_data(dy, w, x, cfg) -> dx          (x only gives dx's shape)
//   ms_ddpm_conv_bwd_weights(dy, x, w, cfg) -> dw       (w only gives dw's shape)
//   ms_ddpm_conv_bwd_weights_bias(dy, x, w, cfg) -> (dw, db)

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cstdlib>

#include "oneapi/dnnl/dnnl.hpp"
#include "one_thread.h"

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine &eng() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

dnnl::stream &strm() {
  static dnnl::stream s(eng());
  return s;
}

tag plain(size_t ndims) {
  switch (ndims) {
    case 3: return tag::abc;
    case 4: return tag::abcd;
    default: return tag::abcde;
  }
}

memory::dims dims_of(int nd, const int64_t *shape) {
  return memory::dims(shape, shape + nd);
}

// One cached convolution: the primitive plus, for each of its three arguments, the
// user (plain) descriptor and, when the primitive wants another layout, a scratch memory and
// the reorder into / out of it.
struct Arg {
  memory::desc user;
  memory::desc want;
  bool reorder = false;
  memory scratch;
  dnnl::reorder to_want, to_user;
};

struct Entry {
  dnnl::primitive prim;
  Arg a[3];        // meaning depends on kind: fwd (src, wei, dst), bwd_data (ddst, wei, dsrc), bwd_w (ddst, src, dwei)
  int arg_id[3];
  memory::desc bias;   // with a bias (kinds 3, 4): its plain desc, the fwd's DNNL_ARG_BIAS / bwd_w's DNNL_ARG_DIFF_BIAS
  int bias_id = 0;
  memory scratchpad;
};

void init_arg(Arg &g, const memory::desc &user, const memory::desc &want, bool is_output) {
  g.user = user;
  g.want = want;
  g.reorder = (user != want);
  if (g.reorder) {
    g.scratch = memory(want, eng());
    memory u(user, eng(), DNNL_MEMORY_NONE);
    if (is_output)
      g.to_user = dnnl::reorder(g.scratch, u);
    else
      g.to_want = dnnl::reorder(u, g.scratch);
  }
}

std::mutex mu;
std::map<std::string, std::unique_ptr<Entry>> cache;

struct Cfg {
  memory::dims strides, pad;
};

bool read_cfg(int nd_cfg, const int64_t *cfg_shape, const int64_t *cfg, int nsp_expected, Cfg &c) {
  if (nd_cfg != 1) return false;
  int64_t n = cfg[0];
  if (n != nsp_expected || cfg_shape[0] != 1 + 2 * n) return false;
  c.strides.assign(cfg + 1, cfg + 1 + n);
  c.pad.assign(cfg + 1 + n, cfg + 1 + 2 * n);
  return true;
}

std::string key_of(int kind, const memory::dims &x, const memory::dims &w, const memory::dims &y, const Cfg &c) {
  std::string k = std::to_string(kind);
  for (const auto *v : {&x, &w, &y, &c.strides, &c.pad}) {
    k += '|';
    for (auto d : *v) { k += std::to_string(d); k += ','; }
  }
  return k;
}

// kind 0: forward, 1: backward data, 2: backward weights; 3: forward with a bias, 4: backward
// weights and bias (torch's CPU convolution with a bias: the same primitives with a bias argument).
std::unique_ptr<Entry> build(int kind, const memory::dims &xd, const memory::dims &wd, const memory::dims &yd, const Cfg &c) {
  auto e = std::make_unique<Entry>();
  memory::desc xu(xd, dt::f32, plain(xd.size())), wu(wd, dt::f32, plain(wd.size())), yu(yd, dt::f32, plain(yd.size()));
  memory::desc xa(xd, dt::f32, tag::any), wa(wd, dt::f32, tag::any), ya(yd, dt::f32, tag::any);
  memory::desc bu({wd[0]}, dt::f32, tag::a);
  bool with_bias = kind >= 3;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto algo = dnnl::algorithm::convolution_direct;
  bool own_attr = kind == 0 || kind == 3;
  auto fwd = with_bias
      ? dnnl::convolution_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training, algo, xa, wa, bu, ya,
                                                  c.strides, c.pad, c.pad, own_attr ? attr : dnnl::primitive_attr())
      : dnnl::convolution_forward::primitive_desc(eng(), dnnl::prop_kind::forward_training, algo, xa, wa, ya,
                                                  c.strides, c.pad, c.pad, own_attr ? attr : dnnl::primitive_attr());
  if (with_bias) {
    e->bias = bu;
    e->bias_id = kind == 3 ? DNNL_ARG_BIAS : DNNL_ARG_DIFF_BIAS;
  }
  if (kind == 0 || kind == 3) {
    init_arg(e->a[0], xu, fwd.src_desc(), false);
    init_arg(e->a[1], wu, fwd.weights_desc(), false);
    init_arg(e->a[2], yu, fwd.dst_desc(), true);
    e->arg_id[0] = DNNL_ARG_SRC; e->arg_id[1] = DNNL_ARG_WEIGHTS; e->arg_id[2] = DNNL_ARG_DST;
    e->scratchpad = memory(fwd.scratchpad_desc(), eng());
    e->prim = dnnl::convolution_forward(fwd);
  } else if (kind == 1) {
    dnnl::convolution_backward_data::primitive_desc bd(eng(), algo, xa, wa, ya, c.strides, c.pad, c.pad, fwd, attr);
    init_arg(e->a[0], yu, bd.diff_dst_desc(), false);
    init_arg(e->a[1], wu, bd.weights_desc(), false);
    init_arg(e->a[2], xu, bd.diff_src_desc(), true);
    e->arg_id[0] = DNNL_ARG_DIFF_DST; e->arg_id[1] = DNNL_ARG_WEIGHTS; e->arg_id[2] = DNNL_ARG_DIFF_SRC;
    e->scratchpad = memory(bd.scratchpad_desc(), eng());
    e->prim = dnnl::convolution_backward_data(bd);
  } else {
    auto bw = with_bias
        ? dnnl::convolution_backward_weights::primitive_desc(eng(), algo, xa, wa, bu, ya, c.strides, c.pad, c.pad, fwd, attr)
        : dnnl::convolution_backward_weights::primitive_desc(eng(), algo, xa, wa, ya, c.strides, c.pad, c.pad, fwd, attr);
    init_arg(e->a[0], yu, bw.diff_dst_desc(), false);
    init_arg(e->a[1], xu, bw.src_desc(), false);
    init_arg(e->a[2], wu, bw.diff_weights_desc(), true);
    e->arg_id[0] = DNNL_ARG_DIFF_DST; e->arg_id[1] = DNNL_ARG_SRC; e->arg_id[2] = DNNL_ARG_DIFF_WEIGHTS;
    e->scratchpad = memory(bw.scratchpad_desc(), eng());
    e->prim = dnnl::convolution_backward_weights(bw);
  }
  return e;
}

// Reorders of tensors below this size run on the calling thread alone.  A reorder is a copy, so
// the result is the same on any number of threads; but with GOMP_SPINCOUNT low (ms_ddpm_tools.
// runtime) every OpenMP parallel region costs a futex wake-up of the pool, ~45-57 us on the
// 2-core machine, while a 64x64x3x3 weight reorder is ~9 us of work: threaded, the DDIM loop's
// small reorders took 2-4x as long as torch's (docs/fastconv.md, "Threads").  2 MB: the reorders
// of a 16x64x32x32 activation (4 MB) stay threaded.  MS_DDPM_SEQ_BYTES overrides it (0: never).
size_t g_seq_bytes = [] {
  const char *s = std::getenv("MS_DDPM_SEQ_BYTES");
  return s ? static_cast<size_t>(std::atoll(s)) : static_cast<size_t>(2) << 20;
}();

void reorder_exec(dnnl::reorder &r, dnnl::stream &s, memory &from, memory &to, size_t bytes) {
  OneThread one(bytes < g_seq_bytes);
  r.execute(s, from, to);
}

// Forward and backward-data convolutions below this many floating-point operations (2 N O I k y:
// a multiply-add counted as two) run on the calling thread alone, primitive built and executed
// with one OpenMP thread: an OpenMP region's wake-up and barrier cost more than half of such a
// conv on the 2-core machine, and more where the worker must wait for a core beside MindSpore's
// threads.  Each output element is computed by one thread in an order that does not depend on
// the thread count, so the results are the same bits (and torch's); backward-weights stays on
// the pool: its reduction over the batch is split across the threads (one thread gave other
// roundings than torch's 2-thread run).  8 MFLOP: every conv of Unet(dim=8) at 16x16 (a small
// U-Net's sampling loop), none of Unet(dim=64) at 32x32 but its final 1x1.  MS_DDPM_SEQ_FLOPS
// overrides it (0: never).
double g_seq_flops = [] {
  const char *s = std::getenv("MS_DDPM_SEQ_FLOPS");
  return s ? std::atof(s) : 8e6;
}();

void run(Entry &e, void *in0, void *in1, void *out, void *bias) {
  auto &s = strm();
  void *ptrs[3] = {in0, in1, out};
  std::unordered_map<int, memory> args;
  memory user[3];
  for (int i = 0; i < 3; ++i) {
    user[i] = memory(e.a[i].user, eng(), ptrs[i]);
    if (e.a[i].reorder) {
      if (i < 2) reorder_exec(e.a[i].to_want, s, user[i], e.a[i].scratch, e.a[i].user.get_size());
      args[e.arg_id[i]] = e.a[i].scratch;
    } else {
      args[e.arg_id[i]] = user[i];
    }
  }
  if (e.bias_id) args[e.bias_id] = memory(e.bias, eng(), bias);
  args[DNNL_ARG_SCRATCHPAD] = e.scratchpad;
  e.prim.execute(s, args);
  if (e.a[2].reorder) reorder_exec(e.a[2].to_user, s, e.a[2].scratch, user[2], e.a[2].user.get_size());
  s.wait();
}

// params: inputs then the output.  order: which of (x, w, y) dims each of the three tensor
// inputs/outputs holds, so that the cache key and descriptors are built from (x, w, y) dims.
int launch(int kind, int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes) {
  // fwd: x, w, cfg, y.  bwd_data: dy, w, x, cfg, dx.  bwd_w: dy, x, w, cfg, dw.
  // fwd_bias: x, w, b, cfg, y.  bwd_w_bias: dy, x, w, cfg, dw, db.
  const int wants[5] = {4, 5, 5, 5, 6};
  if (nparam != wants[kind]) return 1;
  int icfg = kind == 0 ? 2 : 3;
  for (int i = 0; i < nparam; ++i)
    if (i != icfg && std::strcmp(dtypes[i], "float32") != 0) return 2;
  int ix, iw, iy;
  int ib = -1;   // the bias (kind 3, an input) or its gradient (kind 4, the second output)
  if (kind == 0) { ix = 0; iw = 1; iy = 3; }
  else if (kind == 3) { ix = 0; iw = 1; ib = 2; iy = 4; }
  else if (kind == 1) { iy = 0; iw = 1; ix = 2; }
  else { iy = 0; ix = 1; iw = 2; ib = kind == 4 ? 5 : -1; }
  int nd = ndims[ix];
  if (nd < 3 || nd > 5 || ndims[iw] != nd || ndims[iy] != nd) return 3;
  if (ib >= 0 && (ndims[ib] != 1 || shapes[ib][0] != shapes[iw][0])) return 3;
  Cfg c;
  if (!read_cfg(ndims[icfg], shapes[icfg], static_cast<const int64_t *>(params[icfg]), nd - 2, c)) return 4;
  memory::dims xd = dims_of(nd, shapes[ix]), wd = dims_of(nd, shapes[iw]), yd = dims_of(nd, shapes[iy]);
  for (auto v : {&xd, &wd, &yd})
    for (auto d : *v)
      if (d == 0) return 0;  // empty tensors: nothing to compute
  try {
    std::lock_guard<std::mutex> lock(mu);
    double flops = 2.0 * static_cast<double>(xd[1]);       // 2 I (k...) (N O y...)
    for (size_t i = 2; i < wd.size(); ++i) flops *= static_cast<double>(wd[i]);
    for (size_t i = 0; i < yd.size(); ++i) flops *= static_cast<double>(yd[i]);
    const bool seq = (kind == 0 || kind == 1 || kind == 3) && flops < g_seq_flops;
    std::string k = key_of(kind, xd, wd, yd, c) + (seq ? "|1" : "|n");   // one thread, or the pool
    auto it = cache.find(k);
    OneThread one(seq);
    if (it == cache.end()) it = cache.emplace(k, build(kind, xd, wd, yd, c)).first;   // built for the threads it runs on
    Entry &e = *it->second;
    void *bias = ib >= 0 ? params[ib] : nullptr;
    if (kind == 0 || kind == 3) run(e, params[ix], params[iw], params[iy], bias);
    else if (kind == 1) run(e, params[iy], params[iw], params[4], bias);
    else run(e, params[iy], params[ix], params[4], bias);
  } catch (const dnnl::error &) {
    return 5;
  }
  return 0;
}

}  // namespace

extern "C" int ms_ddpm_conv_fwd(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                void *stream_, void *extra) {
  return launch(0, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_conv_fwd_bias(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream_, void *extra) {
  return launch(3, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_conv_bwd_weights_bias(int nparam, void **params, int *ndims, int64_t **shapes,
                                             const char **dtypes, void *stream_, void *extra) {
  return launch(4, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_conv_bwd_data(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                     void *stream_, void *extra) {
  return launch(1, nparam, params, ndims, shapes, dtypes);
}

extern "C" int ms_ddpm_conv_bwd_weights(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                                        void *stream_, void *extra) {
  return launch(2, nparam, params, ndims, shapes, dtypes);
}

// For the tests: the sequential-reorder threshold in bytes (0: every reorder threaded); returns the old one.
extern "C" long ms_ddpm_set_seq_bytes(long n) {
  long old = static_cast<long>(g_seq_bytes);
  g_seq_bytes = static_cast<size_t>(n);
  return old;
}

// For the tests: the one-thread convolution threshold in FLOPs (0: every conv threaded); returns the
// old one.  A primitive is cached with the thread count it was built for: set it before the first call.
extern "C" double ms_ddpm_set_seq_flops(double n) {
  double old = g_seq_flops;
  g_seq_flops = n;
  return old;
}

// For the Python side's self-check after loading: the oneDNN version this library runs.
extern "C" int ms_ddpm_onednn_version() {
  const dnnl_version_t *v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
