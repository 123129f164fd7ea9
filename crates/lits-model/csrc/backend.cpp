// Backend switches and facts that tch does not expose: the libtorch version it was built
// from, CUDA/cuDNN versions, and the determinism flags of `at::globalContext()`.
#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <dlfcn.h>
#include <cstring>

extern "C" {

const char* lits_torch_version() { return TORCH_VERSION; }

bool lits_has_cuda() { return at::globalContext().hasCUDA(); }

bool lits_has_cudnn() { return at::globalContext().hasCuDNN(); }

long lits_cuda_runtime_version() {
  try {
    return at::detail::getCUDAHooks().versionCUDART();
  } catch (...) {
    return -1;
  }
}

long lits_cudnn_version() {
  try {
    return at::detail::getCUDAHooks().versionCuDNN();
  } catch (...) {
    return -1;
  }
}

// Writes the name of CUDA device `index` into `out` (at most `len` bytes, NUL-terminated).
// The CUDA runtime is already loaded by libtorch_cuda; it is only looked up, never loaded.
bool lits_cuda_device_name(int index, char* out, size_t len) {
  void* rt = dlopen("libcudart.so.13", RTLD_NOW | RTLD_NOLOAD);
  if (rt == nullptr) return false;
  using GetProps = int (*)(void*, int);
  auto get = reinterpret_cast<GetProps>(dlsym(rt, "cudaGetDeviceProperties_v2"));
  if (get == nullptr) get = reinterpret_cast<GetProps>(dlsym(rt, "cudaGetDeviceProperties"));
  if (get == nullptr) return false;
  // cudaDeviceProp begins with `char name[256]`; the buffer is far larger than the struct.
  alignas(16) static thread_local char props[16384];
  std::memset(props, 0, sizeof(props));
  if (get(props, index) != 0) return false;
  std::strncpy(out, props, len - 1);
  out[len - 1] = '\0';
  return true;
}

void lits_set_deterministic(bool on) {
  auto& ctx = at::globalContext();
  ctx.setDeterministicAlgorithms(on, /*warn_only=*/false);
  ctx.setDeterministicCuDNN(on);
  ctx.setBenchmarkCuDNN(!on);
}

bool lits_deterministic_algorithms() { return at::globalContext().deterministicAlgorithms(); }
bool lits_deterministic_cudnn() { return at::globalContext().deterministicCuDNN(); }
bool lits_benchmark_cudnn() { return at::globalContext().benchmarkCuDNN(); }

}  // extern "C"
