// OpenMP limited to one thread on the calling thread for a scope (an OpenMP thread count is a
// per-thread setting): small work in onednn_conv.cc and fused_ops.cc runs on the calling thread,
// since an OpenMP region's wake-up and barrier cost more than such work (docs/fastconv.md).
#pragma once

#include <omp.h>

class OneThread {
 public:
  explicit OneThread(bool on = true) : saved_(on ? omp_get_max_threads() : 0) {
    if (on) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (saved_) omp_set_num_threads(saved_);
  }
  OneThread(const OneThread &) = delete;
  OneThread &operator=(const OneThread &) = delete;

 private:
  int saved_;   // the thread count to restore; 0: nothing was changed
};
