// The CPU backend's worker threads between computations.
//
// ggml's CPU backend, as llama-cpp-python builds it on Linux, runs every graph in an OpenMP parallel region, and
// libgomp keeps a team of worker threads for each thread that has entered one. Two live teams take the cores from
// each other: while more threads are managed than there are cores, libgomp spins only briefly at the barriers
// between ops and sleeps instead, which halved decoding speed on 2 cores for a stream, decoded on its own thread while
// the thread that loaded the model still held its team. Every computing call of the engine therefore ends by releasing
// its thread's team, so that only the thread computing now holds one.
#pragma once

namespace fe {

// frees the calling thread's OpenMP worker team (omp_pause_resource_all, soft) where the process has loaded an
// OpenMP runtime; a no-op otherwise (builds without OpenMP, macOS's threadpool). Must not be called from inside a
// parallel region.
void release_worker_threads();

} // namespace fe
