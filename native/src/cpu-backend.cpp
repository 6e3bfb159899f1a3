// The ggml CPU backend with a thread count (cpu-backend.h).
#include "falcon-edge/cpu-backend.h"
#include "falcon-edge/errors.h"

#include "ggml-backend.h"

#include <algorithm>
#include <thread>

namespace fe {

ggml_backend_ptr cpu_backend(int32_t n_threads) {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (dev == nullptr) {
        throw error("the ggml device registry has no CPU device");
    }
    ggml_backend_ptr backend(ggml_backend_dev_init(dev, nullptr));
    if (!backend) {
        throw error(format("cannot initialize the ggml backend of device %s", ggml_backend_dev_name(dev)));
    }
    auto set_n_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(
        ggml_backend_dev_backend_reg(dev), "ggml_backend_set_n_threads");
    if (set_n_threads != nullptr) {
        set_n_threads(backend.get(), n_threads > 0 ? n_threads : (int) std::max(1u, std::thread::hardware_concurrency()));
    }
    return backend;
}

} // namespace fe
