// oneDNN's LSTM primitive (forward training and backward) as XLA FFI handlers, for
// jaxnets/layers/lstm_onednn.py: the kernel PyTorch's CPU LSTM runs, called from a
// jitted JAX program. Keras' gate order (i, f, c, o) is oneDNN's, so a (F, 4U) kernel
// is oneDNN's ldigo layout as it stands.
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One forward and one backward primitive per (T, B, F, U), made once: making a
// primitive generates code, which costs far more than running it.
struct Programs {
  memory::desc src_layer, state, weights_layer, weights_iter, bias, dst_layer;
  dnnl::lstm_forward::primitive_desc fwd_pd;
  dnnl::lstm_forward fwd;
  dnnl::lstm_backward::primitive_desc bwd_pd;
  dnnl::lstm_backward bwd;
  std::vector<float> zeros;  // the gradient of h_T arrives through dst_layer's last step
};

std::shared_ptr<Programs> Get(int64_t t, int64_t b, int64_t f, int64_t u) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, std::shared_ptr<Programs>>
      cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{t, b, f, u}];
  if (slot) return slot;
  auto p = std::make_shared<Programs>();
  auto& eng = Engine();
  p->src_layer = memory::desc({t, b, f}, Dt::f32, Tag::tnc);
  p->state = memory::desc({1, 1, b, u}, Dt::f32, Tag::ldnc);
  p->weights_layer = memory::desc({1, 1, f, 4, u}, Dt::f32, Tag::ldigo);
  p->weights_iter = memory::desc({1, 1, u, 4, u}, Dt::f32, Tag::ldigo);
  p->bias = memory::desc({1, 1, 4, u}, Dt::f32, Tag::ldgo);
  p->dst_layer = memory::desc({t, b, u}, Dt::f32, Tag::tnc);
  // Weights in the layout oneDNN prefers (padded rows), reordered on each call, as PyTorch does.
  auto any_wl = memory::desc({1, 1, f, 4, u}, Dt::f32, Tag::any);
  auto any_wi = memory::desc({1, 1, u, 4, u}, Dt::f32, Tag::any);
  auto dir = dnnl::rnn_direction::unidirectional_left2right;
  // The library's own scratchpad was a null pointer when XLA's worker threads ran
  // the primitive (oneDNN 3.2), so each call passes its own.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  p->fwd_pd = dnnl::lstm_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dir, p->src_layer, p->state, p->state, any_wl,
      any_wi, p->bias, p->dst_layer, p->state, p->state, attr);
  p->fwd = dnnl::lstm_forward(p->fwd_pd);
  p->bwd_pd = dnnl::lstm_backward::primitive_desc(
      eng, dnnl::prop_kind::backward, dir, p->src_layer, p->state, p->state, any_wl, any_wi,
      p->bias, p->dst_layer, p->state, p->state, p->src_layer, p->state, p->state, any_wl,
      any_wi, p->bias, p->dst_layer, p->state, p->state, p->fwd_pd, attr);
  p->bwd = dnnl::lstm_backward(p->bwd_pd);
  p->zeros.assign(b * u, 0.0f);
  slot = p;
  return p;
}

// Runs every oneDNN call on one thread of its own. oneDNN parallelizes with OpenMP,
// and GNU OpenMP gives each calling thread its own team; XLA calls a handler from
// whichever of its threads runs the program, and once the teams outnumber the
// cores, OpenMP stops spinning between its parallel regions and sleeps instead.
// oneDNN's LSTM runs hundreds of small regions, so that made it 2-3x slower
// (benchmark LSTM, forward 5.7-9.5 ms against 2.5; 2 cores).
class Runner {
 public:
  static Runner& Get() {
    static Runner* runner = new Runner();  // never destroyed: its thread outlives exit
    return *runner;
  }

  void Run(std::function<void()> fn) {
    std::packaged_task<void()> task(std::move(fn));
    std::future<void> done = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    done.get();  // rethrows the task's exception
  }

 private:
  Runner() : thread_([this] { Loop(); }) {}

  void Loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  std::thread thread_;
};

memory Scratchpad(const memory::desc& d) {
  static std::vector<char> buf;  // used by the runner's thread only
  if (buf.size() < d.get_size()) buf.resize(d.get_size());
  return memory(d, Engine(), buf.data());
}

memory Wrap(const memory::desc& d, const void* data) {
  return memory(d, Engine(), const_cast<void*>(data));
}

memory Reorder(dnnl::stream& s, memory from, const memory::desc& to_desc) {
  if (from.get_desc() == to_desc) return from;
  memory to(to_desc, Engine());
  dnnl::reorder(from, to).execute(s, from, to);
  return to;
}

using F32 = ffi::Buffer<ffi::F32>;
using OutF32 = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 xs, F32 h0, F32 c0, F32 wl, F32 wi, F32 bias, OutF32 hs, OutF32 c_last,
                   ffi::ResultBuffer<ffi::U8> ws) {
  try {
    auto d = xs.dimensions();
    int64_t t = d[0], b = d[1], f = d[2], u = h0.dimensions()[1];
    auto p = Get(t, b, f, u);
    Runner::Get().Run([&] {
      dnnl::stream s(Engine());
      std::vector<float> h_last(b * u);  // h_T is also dst_layer's last step
      p->fwd.execute(
          s, {{DNNL_ARG_SRC_LAYER, Wrap(p->src_layer, xs.typed_data())},
              {DNNL_ARG_SRC_ITER, Wrap(p->state, h0.typed_data())},
              {DNNL_ARG_SRC_ITER_C, Wrap(p->state, c0.typed_data())},
              {DNNL_ARG_WEIGHTS_LAYER,
               Reorder(s, Wrap(p->weights_layer, wl.typed_data()), p->fwd_pd.weights_layer_desc())},
              {DNNL_ARG_WEIGHTS_ITER,
               Reorder(s, Wrap(p->weights_iter, wi.typed_data()), p->fwd_pd.weights_iter_desc())},
              {DNNL_ARG_BIAS, Wrap(p->bias, bias.typed_data())},
              {DNNL_ARG_DST_LAYER, Wrap(p->dst_layer, hs->typed_data())},
              {DNNL_ARG_DST_ITER, Wrap(p->state, h_last.data())},
              {DNNL_ARG_DST_ITER_C, Wrap(p->state, c_last->typed_data())},
              {DNNL_ARG_WORKSPACE, Wrap(p->fwd_pd.workspace_desc(), ws->untyped_data())},
              {DNNL_ARG_SCRATCHPAD, Scratchpad(p->fwd_pd.scratchpad_desc())}});
      s.wait();
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN LSTM forward: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Backward(F32 xs, F32 h0, F32 c0, F32 wl, F32 wi, F32 bias, F32 hs, F32 c_last,
                    ffi::Buffer<ffi::U8> ws, F32 dhs, F32 dc_last, OutF32 dxs, OutF32 dh0,
                    OutF32 dc0, OutF32 dwl, OutF32 dwi, OutF32 dbias) {
  try {
    auto d = xs.dimensions();
    int64_t t = d[0], b = d[1], f = d[2], u = h0.dimensions()[1];
    auto p = Get(t, b, f, u);
    Runner::Get().Run([&] {
      auto& eng = Engine();
      dnnl::stream s(eng);
      memory dwl_own(p->bwd_pd.diff_weights_layer_desc(), eng);
      memory dwi_own(p->bwd_pd.diff_weights_iter_desc(), eng);
      // oneDNN adds into the weight gradients.
      std::memset(dwl_own.get_data_handle(), 0, dwl_own.get_desc().get_size());
      std::memset(dwi_own.get_data_handle(), 0, dwi_own.get_desc().get_size());
      std::memset(dbias->typed_data(), 0, dbias->size_bytes());
      const float* h_last = hs.typed_data() + (t - 1) * b * u;
      p->bwd.execute(
          s, {{DNNL_ARG_SRC_LAYER, Wrap(p->src_layer, xs.typed_data())},
              {DNNL_ARG_SRC_ITER, Wrap(p->state, h0.typed_data())},
              {DNNL_ARG_SRC_ITER_C, Wrap(p->state, c0.typed_data())},
              {DNNL_ARG_WEIGHTS_LAYER,
               Reorder(s, Wrap(p->weights_layer, wl.typed_data()), p->bwd_pd.weights_layer_desc())},
              {DNNL_ARG_WEIGHTS_ITER,
               Reorder(s, Wrap(p->weights_iter, wi.typed_data()), p->bwd_pd.weights_iter_desc())},
              {DNNL_ARG_BIAS, Wrap(p->bias, bias.typed_data())},
              {DNNL_ARG_DST_LAYER, Wrap(p->dst_layer, hs.typed_data())},
              {DNNL_ARG_DST_ITER, Wrap(p->state, h_last)},
              {DNNL_ARG_DST_ITER_C, Wrap(p->state, c_last.typed_data())},
              {DNNL_ARG_WORKSPACE, Wrap(p->fwd_pd.workspace_desc(), ws.untyped_data())},
              {DNNL_ARG_DIFF_DST_LAYER, Wrap(p->dst_layer, dhs.typed_data())},
              {DNNL_ARG_DIFF_DST_ITER, Wrap(p->state, p->zeros.data())},
              {DNNL_ARG_DIFF_DST_ITER_C, Wrap(p->state, dc_last.typed_data())},
              {DNNL_ARG_DIFF_SRC_LAYER, Wrap(p->src_layer, dxs->typed_data())},
              {DNNL_ARG_DIFF_SRC_ITER, Wrap(p->state, dh0->typed_data())},
              {DNNL_ARG_DIFF_SRC_ITER_C, Wrap(p->state, dc0->typed_data())},
              {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl_own},
              {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi_own},
              {DNNL_ARG_DIFF_BIAS, Wrap(p->bias, dbias->typed_data())},
              {DNNL_ARG_SCRATCHPAD, Scratchpad(p->bwd_pd.scratchpad_desc())}});
      memory dwl_out = Wrap(p->weights_layer, dwl->typed_data());
      memory dwi_out = Wrap(p->weights_iter, dwi->typed_data());
      dnnl::reorder(dwl_own, dwl_out).execute(s, dwl_own, dwl_out);
      dnnl::reorder(dwi_own, dwi_out).execute(s, dwi_own, dwi_out);
      s.wait();
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN LSTM backward: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnetsLstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // xs (T, B, F)
                                  .Arg<F32>()  // h0 (B, U)
                                  .Arg<F32>()  // c0 (B, U)
                                  .Arg<F32>()  // kernel (F, 4U)
                                  .Arg<F32>()  // recurrent kernel (U, 4U)
                                  .Arg<F32>()  // bias (4U,)
                                  .Ret<F32>()  // hs (T, B, U)
                                  .Ret<F32>()  // c_T (B, U)
                                  .Ret<ffi::Buffer<ffi::U8>>());  // workspace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxnetsLstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Arg<F32>()  // hs
                                  .Arg<F32>()  // c_T
                                  .Arg<ffi::Buffer<ffi::U8>>()  // workspace
                                  .Arg<F32>()  // d hs
                                  .Arg<F32>()  // d c_T
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>()
                                  .Ret<F32>());

// The workspace's size in bytes (the forward writes it, the backward reads it), or -1.
extern "C" int64_t jaxnets_lstm_workspace_bytes(int64_t t, int64_t b, int64_t f, int64_t u) {
  try {
    return static_cast<int64_t>(Get(t, b, f, u)->fwd_pd.workspace_desc().get_size());
  } catch (...) {
    return -1;
  }
}
