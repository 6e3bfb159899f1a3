// The only place that interprets llama_decode's return codes.
#include "falcon-edge/errors.h"

#include <cstdarg>
#include <cstdio>
#include <vector>

namespace fe {

std::string format(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    const int n = vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::vector<char> buf(n + 1);
    vsnprintf(buf.data(), buf.size(), fmt, ap2);
    va_end(ap2);
    return std::string(buf.data(), n);
}

void check_decode(int rc, const std::string & what) {
    if (rc == 0) {
        return;
    }
    if (rc == 1) {
        throw context_full(format("no KV slot for %s (llama_decode returned 1)", what.c_str()));
    }
    if (rc == 2) {
        throw aborted(format("decoding %s was aborted", what.c_str()));
    }
    throw error(format("llama_decode failed on %s (return code %d)", what.c_str(), rc));
}

} // namespace fe
