// Typed errors of the engine. C++ throws these and never exits or aborts on user input; the
// bindings translate each one into the Python class of the same name (falcon_edge.errors).
#pragma once

#include <stdexcept>
#include <string>

namespace fe {

// base of every engine error -> FalconEdgeError (a RuntimeError)
struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// a model or drafter file could not be loaded -> ModelLoadError
struct model_error : error {
    using error::error;
};

// the drafter was made for another target or is malformed -> IncompatibleDrafterError
struct incompatible_drafter : error {
    using error::error;
};

// the request does not fit in the context (llama_decode rc 1 or a size check) -> ContextFullError
struct context_full : error {
    using error::error;
};

// generation was cancelled (Ctrl-C, on_chunk returned false, llama_decode rc 2) -> GenerationAborted
struct aborted : error {
    using error::error;
};

// bad parameters are std::invalid_argument -> ValueError

// interprets a llama_decode return code: 0 returns, 1 throws context_full, 2 throws aborted,
// anything else throws error; `what` names the batch ("tree of 7 nodes at n_past 120")
void check_decode(int rc, const std::string & what);

// printf-style formatting for error messages
std::string format(const char * fmt, ...);

} // namespace fe
