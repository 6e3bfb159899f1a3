// The ggml CPU backend for the graphs the engine computes itself (the drafter, the path head).
#pragma once

#include "ggml-cpp.h"

#include <cstdint>

namespace fe {

// the CPU device's backend running n_threads threads (<= 0: every hardware thread); throws fe::error
// when the ggml device registry has no CPU device or it cannot be initialized
ggml_backend_ptr cpu_backend(int32_t n_threads);

} // namespace fe
