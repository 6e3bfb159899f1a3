// Releasing the calling thread's OpenMP worker team (worker-threads.h).
#include "falcon-edge/worker-threads.h"

#include <dlfcn.h>

#include <initializer_list>

namespace fe {

namespace {

using pause_fn = int (*)(int);

constexpr int OMP_PAUSE_SOFT = 1;   // omp_pause_resource_t: free the threads, keep the runtime usable

// the runtime's omp_pause_resource_all, looked up once: ggml's CPU backend may be loaded with RTLD_LOCAL, so the
// runtime it pulled in is asked for by name without loading it (RTLD_NOLOAD)
pause_fn find_pause() {
    for (const char * lib : {"libgomp.so.1", "libomp.so", "libomp.so.5", "libiomp5.so"}) {
        void * h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
        if (h != nullptr) {
            return reinterpret_cast<pause_fn>(dlsym(h, "omp_pause_resource_all"));
        }
    }
    return reinterpret_cast<pause_fn>(dlsym(RTLD_DEFAULT, "omp_pause_resource_all"));
}

} // namespace

void release_worker_threads() {
    static const pause_fn pause = find_pause();
    if (pause != nullptr) {
        pause(OMP_PAUSE_SOFT);
    }
}

} // namespace fe
