// The call guard of every engine binding that computes: the GIL is released while it runs, and the calling thread's
// CPU worker team is released before the GIL is taken back (worker-threads.h), so that a stream or a server
// connection, each decoded on its own thread, never competes with a team left behind by an earlier call.
#pragma once

#include "falcon-edge/worker-threads.h"

#include <nanobind/nanobind.h>

struct compute_guard {
    nanobind::gil_scoped_release nogil;
    compute_guard() = default;
    compute_guard(const compute_guard &) = delete;
    compute_guard & operator=(const compute_guard &) = delete;
    ~compute_guard() { fe::release_worker_threads(); }
};
