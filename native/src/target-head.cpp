// The target's LM head over a read-only mapping of its GGUF file (target-head.h).
#include "falcon-edge/target-head.h"
#include "falcon-edge/cpu-backend.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/gguf-schema.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "gguf.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>

#ifndef _WIN32
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace fe {

namespace gs = gguf_schema;

static constexpr size_t GRAPH_NODES      = 8;  // input, product
static constexpr size_t TENSOR_ALIGNMENT = 32; // what ggml_backend_cpu_buffer_from_ptr asserts

target_head::target_head(const std::string & path_model, int32_t n_embd, int32_t n_vocab, int32_t n_threads)
    : n_embd_(n_embd), n_vocab_(n_vocab) {
#ifdef _WIN32
    (void) path_model;
    (void) n_threads;
    throw model_error("the path head maps the target file with mmap, which this platform lacks");
#else
    ggml_context * meta = nullptr;
    gguf_context_ptr gguf(gguf_init_from_file(path_model.c_str(), {/*.no_alloc =*/ true, /*.ctx =*/ &meta}));
    ggml_context_ptr meta_ptr(meta);
    if (!gguf || !meta) {
        throw model_error(format("target file '%s' is not a readable GGUF file", path_model.c_str()));
    }
    int64_t id = gguf_find_tensor(gguf.get(), gs::TARGET_TENSOR_OUTPUT);
    if (id < 0) {
        id = gguf_find_tensor(gguf.get(), gs::TARGET_TENSOR_TOKEN_EMBD); // tied embeddings
    }
    if (id < 0) {
        throw model_error(format("target file '%s' has neither %s nor %s", path_model.c_str(), gs::TARGET_TENSOR_OUTPUT,
                                 gs::TARGET_TENSOR_TOKEN_EMBD));
    }
    const char * name = gguf_get_tensor_name(gguf.get(), id);
    const ggml_tensor * src = ggml_get_tensor(meta, name);
    if (src == nullptr || src->ne[0] != n_embd || src->ne[1] != n_vocab || src->ne[2] != 1 || src->ne[3] != 1) {
        throw model_error(src == nullptr ? format("LM head %s of '%s' has no tensor metadata", name, path_model.c_str())
                                         : format("LM head %s of '%s' is [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64 "], expected [%d, %d]",
                                                  name, path_model.c_str(), src->ne[0], src->ne[1], src->ne[2], src->ne[3], n_embd, n_vocab));
    }
    const size_t offset = gguf_get_data_offset(gguf.get()) + gguf_get_tensor_offset(gguf.get(), id);
    const size_t n_bytes = ggml_nbytes(src);

    const int fd = open(path_model.c_str(), O_RDONLY);
    if (fd < 0) {
        throw model_error(format("cannot open target file '%s'", path_model.c_str()));
    }
    struct stat st = {};
    const bool sized = fstat(fd, &st) == 0 && (uint64_t) st.st_size >= offset + n_bytes;
    void * map = sized ? mmap(nullptr, (size_t) st.st_size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (map == MAP_FAILED) {
        throw model_error(format("cannot map %zu bytes of %s from '%s'", n_bytes, name, path_model.c_str()));
    }
    map_.data = map;
    map_.size = (size_t) st.st_size;

    // a CPU buffer over foreign memory must start on a tensor boundary; GGUF aligns tensor data to 32 bytes unless
    // the file says otherwise
    if (((uintptr_t) map_.data + offset) % TENSOR_ALIGNMENT != 0) {
        throw model_error(format("%s of '%s' is not aligned to %zu bytes in the file", name, path_model.c_str(),
                                 TENSOR_ALIGNMENT));
    }
    ctx_w_.reset(ggml_init({/*.mem_size =*/ ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true}));
    w_ = ggml_new_tensor_2d(ctx_w_.get(), src->type, n_embd, n_vocab);
    ggml_set_name(w_, name);
    buf_w_.reset(ggml_backend_cpu_buffer_from_ptr((uint8_t *) map_.data + offset, n_bytes));
    ggml_backend_buffer_set_usage(buf_w_.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    if (ggml_backend_tensor_alloc(buf_w_.get(), w_, ggml_backend_buffer_get_base(buf_w_.get())) != GGML_STATUS_SUCCESS) {
        throw model_error(format("cannot place %s of '%s' in a CPU buffer", name, path_model.c_str()));
    }

    backend_ = cpu_backend(n_threads);
    galloc_.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
    buf_meta_.resize(ggml_tensor_overhead() * GRAPH_NODES + ggml_graph_overhead_custom(GRAPH_NODES, false));
#endif
}

target_head::~target_head() = default;

target_head::file_map::~file_map() {
#ifndef _WIN32
    if (data != nullptr) {
        munmap(data, size);
    }
#endif
}

void target_head::logits(const float * feat, int32_t m, float * out) {
    if (m < 1) {
        throw std::invalid_argument(format("the path head needs at least one row, got %d", m));
    }
    ggml_context_ptr ctx(ggml_init({/*.mem_size =*/ buf_meta_.size(), /*.mem_buffer =*/ buf_meta_.data(), /*.no_alloc =*/ true}));
    ggml_tensor * x = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, n_embd_, m); // [n_embd, m]
    ggml_set_input(x);
    ggml_tensor * y = ggml_mul_mat(ctx.get(), w_, x);                             // [n_vocab, m]
    ggml_set_output(y);
    ggml_cgraph * graph = ggml_new_graph_custom(ctx.get(), GRAPH_NODES, false);
    ggml_build_forward_expand(graph, y);
    if (!ggml_gallocr_alloc_graph(galloc_.get(), graph)) {
        throw error(format("cannot allocate the path head's graph for %d rows", m));
    }
    ggml_backend_tensor_set(x, feat, 0, ggml_nbytes(x));
    const enum ggml_status status = ggml_backend_graph_compute(backend_.get(), graph);
    if (status != GGML_STATUS_SUCCESS) {
        throw error(format("path head compute failed with status %d (%d rows)", (int) status, m));
    }
    ggml_backend_tensor_get(y, out, 0, ggml_nbytes(y));
}

} // namespace fe
