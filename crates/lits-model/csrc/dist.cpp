// Data-parallel collectives from the libtorch lits links: c10d's TCPStore for the
// rendezvous, ProcessGroupGloo (CPU tensors) for the collectives, and an all-reduce that
// autograd can differentiate (SyncBatchNorm and batch Dice need one). The Rust side
// (`src/dist.rs`) owns the handle and turns every error string into a typed error.
//
// Every entry point catches C++ exceptions: a peer that died or hung surfaces as an error
// message, never as an exception crossing into Rust.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

void set_error(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}

// c10::Error messages carry a C++ backtrace after the first line; keep what a user reads.
std::string first_lines(const std::exception& e) {
  std::string what = e.what();
  auto cut = what.find("\nException raised from");
  if (cut != std::string::npos) what.resize(cut);
  return what;
}

std::string heartbeat_key(const std::string& prefix, int rank) { return prefix + "lits/heartbeat/" + std::to_string(rank); }

}  // namespace

struct LitsGroup {
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  std::string host;
  int port;
  // Every key of this group goes under it (a launcher's store may serve restarts too).
  std::string prefix;
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  // A second connection to the store, for the heartbeat thread alone.
  c10::intrusive_ptr<c10d::TCPStore> beat_store;
  std::thread beat;
  std::mutex beat_mutex;
  std::condition_variable beat_cv;
  bool stopping = false;

  // Gloo reduces host memory: a CUDA tensor goes through a host copy.
  void run_allreduce(std::vector<at::Tensor>& tensors) {
    std::vector<at::Tensor> host;
    for (auto& t : tensors) host.push_back(t.is_cuda() ? t.cpu() : t);
    c10d::AllreduceOptions opts;
    opts.timeout = timeout;
    backend->allreduce(host, opts)->wait(timeout);
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].is_cuda()) tensors[i].copy_(host[i]);
    }
  }

  void run_broadcast(at::Tensor& tensor, int root) {
    std::vector<at::Tensor> host{tensor.is_cuda() ? tensor.cpu() : tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = timeout;
    backend->broadcast(host, opts)->wait(timeout);
    if (tensor.is_cuda()) tensor.copy_(host[0]);
  }
};

namespace {

// Sum over the ranks whose backward is the same sum of the incoming gradients: with every
// rank's loss depending on the total, d(sum_r loss_r)/d(x_q) = sum_r d(loss_r)/d(total).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    std::vector<at::Tensor> t{x.detach().clone().contiguous()};
    reinterpret_cast<LitsGroup*>(group)->run_allreduce(t);
    return t[0];
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<LitsGroup*>(ctx->saved_data["group"].toInt());
    std::vector<at::Tensor> t{grads[0].contiguous().clone()};
    g->run_allreduce(t);
    return {t[0], at::Tensor()};
  }
};

}  // namespace

extern "C" {

// Joins the group: rank 0 hosts the TCPStore at `host:port` (on every address) unless
// `server` is false (a launcher such as torchrun hosts it), the others connect to it; every
// key goes under `prefix`. Gloo binds `gloo_host` (the address this rank is reached at) or, when
// `gloo_interface` is not empty, that network interface. Returns null and fills `err` on
// failure (nobody listening within `timeout_ms`, a port taken, ...).
LitsGroup* lits_group_new(const char* host, int port, int rank, int world, long timeout_ms, bool server, const char* prefix,
                          const char* gloo_host, const char* gloo_interface, char* err, size_t err_len) {
  try {
    auto g = std::make_unique<LitsGroup>();
    g->rank = rank;
    g->world = world;
    g->timeout = std::chrono::milliseconds(timeout_ms);
    g->host = host;
    g->port = port;
    g->prefix = prefix;
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = server && rank == 0;
    opts.numWorkers = server ? std::optional<std::size_t>(world) : std::nullopt;
    opts.waitWorkers = server;
    opts.timeout = g->timeout;
    g->tcp = c10::make_intrusive<c10d::TCPStore>(g->host, opts);
    g->store = c10::make_intrusive<c10d::PrefixStore>(g->prefix, c10::static_intrusive_pointer_cast<c10d::Store>(g->tcp));
    c10d::TCPStoreOptions client = opts;
    client.isServer = false;
    client.waitWorkers = false;
    client.numWorkers = std::nullopt;
    g->beat_store = c10::make_intrusive<c10d::TCPStore>(g->host, client);

    auto gopts = c10d::ProcessGroupGloo::Options::create(g->timeout);
    std::string iface = gloo_interface == nullptr ? "" : gloo_interface;
    if (!iface.empty()) {
      gopts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
    } else {
      gopts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(gloo_host));
    }
    gopts->threads = 1;
    g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, gopts);

    LitsGroup* raw = g.get();
    raw->beat = std::thread([raw] {
      auto key = heartbeat_key(raw->prefix, raw->rank);
      std::unique_lock<std::mutex> lock(raw->beat_mutex);
      while (!raw->stopping) {
        try {
          raw->beat_store->add(key, 1);
        } catch (...) {
          return;  // The store is gone (rank 0 ended): nobody reads beats any more.
        }
        raw->beat_cv.wait_for(lock, 500ms, [raw] { return raw->stopping; });
      }
    });
    return g.release();
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return nullptr;
  }
}

void lits_group_free(LitsGroup* g) {
  if (g == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(g->beat_mutex);
    g->stopping = true;
  }
  g->beat_cv.notify_all();
  if (g->beat.joinable()) g->beat.join();
  try {
    delete g;
  } catch (...) {
  }
}

// In-place sum of `n` tensors over the ranks (one collective each, in the order given).
int lits_group_all_reduce(LitsGroup* g, at::Tensor** tensors, size_t n, char* err, size_t err_len) {
  try {
    for (size_t i = 0; i < n; ++i) {
      std::vector<at::Tensor> t{*tensors[i]};
      g->run_allreduce(t);
    }
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return -1;
  }
}

int lits_group_broadcast(LitsGroup* g, at::Tensor* tensor, int root, char* err, size_t err_len) {
  try {
    g->run_broadcast(*tensor, root);
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return -1;
  }
}

int lits_group_barrier(LitsGroup* g, char* err, size_t err_len) {
  try {
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    g->backend->barrier(opts)->wait(g->timeout);
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return -1;
  }
}

// The sum over the ranks of `x`, differentiable (see AllReduceSum); null on failure.
at::Tensor* lits_group_all_reduce_autograd(LitsGroup* g, at::Tensor* x, char* err, size_t err_len) {
  try {
    return new at::Tensor(AllReduceSum::apply(*x, reinterpret_cast<int64_t>(g)));
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return nullptr;
  }
}

int lits_store_set(LitsGroup* g, const char* key, const uint8_t* data, size_t len, char* err, size_t err_len) {
  try {
    g->store->set(key, std::vector<uint8_t>(data, data + len));
    return 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return -1;
  }
}

// The value of `key`, waiting for it up to the group's timeout; malloc'ed (free it with
// lits_store_free), null on failure.
uint8_t* lits_store_get(LitsGroup* g, const char* key, size_t* len, char* err, size_t err_len) {
  try {
    auto v = g->store->get(key);
    auto* out = static_cast<uint8_t*>(std::malloc(v.size() + 1));
    if (out == nullptr) throw std::bad_alloc();
    std::memcpy(out, v.data(), v.size());
    *len = v.size();
    return out;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return nullptr;
  }
}

void lits_store_free(uint8_t* p) { std::free(p); }

// Whether `key` is in the store now (1), not yet (0), or the store cannot be asked (-1).
int lits_store_check(LitsGroup* g, const char* key, char* err, size_t err_len) {
  try {
    return g->store->check({key}) ? 1 : 0;
  } catch (const std::exception& e) {
    set_error(err, err_len, first_lines(e));
    return -1;
  }
}

// Which ranks stopped beating: each rank's heartbeat counter is read, then read again
// `wait_ms` later; a counter that did not move is a lost rank. Writes at most `max` ranks
// into `out` and returns how many were lost, or -1 when the store itself is unreachable
// (rank 0, which hosts it, is gone).
int lits_group_lost_ranks(LitsGroup* g, long wait_ms, int* out, int max) {
  try {
    c10d::TCPStoreOptions client;
    client.port = static_cast<std::uint16_t>(g->port);
    client.isServer = false;
    client.waitWorkers = false;
    client.timeout = std::chrono::milliseconds(2000);
    c10d::TCPStore store(g->host, client);
    std::vector<int64_t> before(g->world);
    for (int r = 0; r < g->world; ++r) before[r] = store.add(heartbeat_key(g->prefix, r), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    int n = 0;
    for (int r = 0; r < g->world; ++r) {
      if (r == g->rank) continue;
      if (store.add(heartbeat_key(g->prefix, r), 0) == before[r]) {
        if (n < max) out[n] = r;
        ++n;
      }
    }
    return n;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
