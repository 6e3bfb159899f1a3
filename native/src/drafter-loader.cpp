// Loads a falcon-sar drafter GGUF and the target tensors it borrows (token embedding, LM head), and
// checks that drafter, target file and target model belong together (drafter_load in drafter.h).
#include "falcon-edge/drafter.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/gguf-schema.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>

namespace fe {

namespace gs = gguf_schema;

namespace {

constexpr uint64_t FNV_OFFSET = 0xcbf29ce484222325ULL;
constexpr uint64_t FNV_PRIME  = 0x100000001b3ULL;
constexpr size_t   READ_CHUNK = 16u << 20; // bytes staged on the host per ggml_backend_tensor_set

struct file_closer {
    void operator()(std::FILE * fp) const { std::fclose(fp); }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

// a GGUF file opened for its metadata; the tensor data stay on disk until read_tensor
struct gguf_file {
    std::string      what; // "drafter" or "target", for messages
    std::string      path;
    gguf_context_ptr gguf;
    ggml_context_ptr meta; // one metadata-only tensor per GGUF tensor
    uint64_t         size = 0;
};

// bytes of a file to copy back to back into one tensor, rows converted from src_type to dst's type
// where the two differ
struct tensor_load {
    ggml_tensor *                              dst;
    const gguf_file *                          src;
    std::vector<std::pair<uint64_t, uint64_t>> runs; // (file offset, n bytes)
    enum ggml_type                             src_type = GGML_TYPE_COUNT; // COUNT: dst's type
};

struct target_identity {
    std::string arch;
    int64_t     n_embd  = 0;
    int64_t     n_vocab = 0;
    std::string vocab_hash;
};

uint64_t fnv1a_add(uint64_t h, const char * text) {
    // the terminating NUL is hashed too, so that token boundaries count
    const unsigned char * p = (const unsigned char *) text;
    do {
        h = (h ^ *p) * FNV_PRIME;
    } while (*p++ != 0);
    return h;
}

std::string format_hash(uint64_t h) {
    return format("fnv1a64:%016" PRIx64, h);
}

// a string read from a file, fit for a message: bytes outside printable ASCII become \xNN
// (a message must stay valid UTF-8 to reach Python as the exception it is)
std::string printable(const std::string & text) {
    std::string out;
    for (unsigned char c : text) {
        out += c >= 0x20 && c < 0x7f ? std::string(1, (char) c) : format("\\x%02x", c);
    }
    return out;
}

gguf_file open_gguf(const std::string & what, const std::string & path) {
    gguf_file f;
    f.what = what;
    f.path = path;
    file_ptr fp(std::fopen(path.c_str(), "rb"));
    if (!fp) {
        throw model_error(format("cannot open %s file '%s'", what.c_str(), path.c_str()));
    }
    if (fseeko(fp.get(), 0, SEEK_END) != 0) {
        throw model_error(format("cannot seek in %s file '%s'", what.c_str(), path.c_str()));
    }
    f.size = (uint64_t) ftello(fp.get());

    ggml_context * meta = nullptr;
    f.gguf.reset(gguf_init_from_file(path.c_str(), {/*.no_alloc =*/ true, /*.ctx =*/ &meta}));
    f.meta.reset(meta);
    if (!f.gguf || !f.meta) {
        throw model_error(format("%s file '%s' is not a readable GGUF file", what.c_str(), path.c_str()));
    }
    return f;
}

// ---- metadata --------------------------------------------------------------------------------

int64_t require_key(const gguf_file & f, const std::string & key, enum gguf_type type) {
    const int64_t id = gguf_find_key(f.gguf.get(), key.c_str());
    if (id < 0) {
        throw incompatible_drafter(format("%s file '%s' has no key %s", f.what.c_str(), f.path.c_str(), key.c_str()));
    }
    const enum gguf_type found = gguf_get_kv_type(f.gguf.get(), id);
    if (found != type) {
        throw incompatible_drafter(format("%s file '%s': key %s has type %s (expected %s)", f.what.c_str(),
                                          f.path.c_str(), key.c_str(), gguf_type_name(found), gguf_type_name(type)));
    }
    return id;
}

std::string get_str(const gguf_file & f, const std::string & key) {
    return gguf_get_val_str(f.gguf.get(), require_key(f, key, GGUF_TYPE_STRING));
}

float get_f32(const gguf_file & f, const std::string & key) {
    const float v = gguf_get_val_f32(f.gguf.get(), require_key(f, key, GGUF_TYPE_FLOAT32));
    if (!std::isfinite(v) || v <= 0.0f) {
        throw incompatible_drafter(format("%s file '%s': %s = %g must be positive", f.what.c_str(), f.path.c_str(), key.c_str(), v));
    }
    return v;
}

// u32 values only; the range check keeps absurd sizes from reaching an allocation
int32_t get_u32(const gguf_file & f, const std::string & key, uint32_t lo, uint32_t hi) {
    const uint32_t v = gguf_get_val_u32(f.gguf.get(), require_key(f, key, GGUF_TYPE_UINT32));
    if (v < lo || v > hi) {
        throw incompatible_drafter(format("%s file '%s': %s = %u is out of range [%u, %u]", f.what.c_str(),
                                          f.path.c_str(), key.c_str(), v, lo, hi));
    }
    return (int32_t) v;
}

std::vector<int32_t> get_tree_parents(const gguf_file & f) {
    std::vector<int32_t> parents;
    if (gguf_find_key(f.gguf.get(), gs::KEY_TREE_PARENTS) < 0) {
        return parents;
    }
    const int64_t id = require_key(f, gs::KEY_TREE_PARENTS, GGUF_TYPE_ARRAY);
    if (gguf_get_arr_type(f.gguf.get(), id) != GGUF_TYPE_INT32) {
        throw incompatible_drafter(format("drafter file '%s': %s must be an i32 array", f.path.c_str(), gs::KEY_TREE_PARENTS));
    }
    const int32_t * data = (const int32_t *) gguf_get_arr_data(f.gguf.get(), id);
    parents.assign(data, data + gguf_get_arr_n(f.gguf.get(), id));
    for (size_t i = 0; i < parents.size(); ++i) {
        if (parents[i] < -1 || parents[i] >= (int32_t) i) {
            throw incompatible_drafter(format("drafter file '%s': tree node %zu has parent %d (expected -1 .. %zu)",
                                              f.path.c_str(), i, parents[i], i));
        }
    }
    return parents;
}

std::vector<float> get_accept_rates(const gguf_file & f) {
    std::vector<float> rates;
    if (gguf_find_key(f.gguf.get(), gs::KEY_ACCEPT_RATES) < 0) {
        return rates;
    }
    const int64_t id = require_key(f, gs::KEY_ACCEPT_RATES, GGUF_TYPE_ARRAY);
    const size_t n = gguf_get_arr_n(f.gguf.get(), id);
    if (gguf_get_arr_type(f.gguf.get(), id) != GGUF_TYPE_FLOAT32 || n != (size_t) gs::N_ACCEPT_KEYS) {
        throw incompatible_drafter(format("drafter file '%s': %s must be an f32 array of %d rates, got %zu entries of type %s",
                                          f.path.c_str(), gs::KEY_ACCEPT_RATES, gs::N_ACCEPT_KEYS, n,
                                          gguf_type_name(gguf_get_arr_type(f.gguf.get(), id))));
    }
    const float * data = (const float *) gguf_get_arr_data(f.gguf.get(), id);
    rates.assign(data, data + n);
    for (size_t i = 0; i < n; ++i) {
        if (!(rates[i] >= 0.0f && rates[i] <= 1.0f)) {
            throw incompatible_drafter(format("drafter file '%s': %s[%zu] = %g is not a rate in [0, 1]", f.path.c_str(),
                                              gs::KEY_ACCEPT_RATES, i, rates[i]));
        }
    }
    return rates;
}

fusion_kind parse_fusion(const gguf_file & f) {
    const std::string fusion = get_str(f, gs::KEY_FUSION);
    if (fusion == gs::FUSION_LSTM) {
        return fusion_kind::LSTM;
    }
    if (fusion == gs::FUSION_LINEAR) {
        return fusion_kind::LINEAR;
    }
    throw incompatible_drafter(format("drafter file '%s': unknown fusion '%s' (expected '%s' or '%s')", f.path.c_str(),
                                      printable(fusion).c_str(), gs::FUSION_LSTM, gs::FUSION_LINEAR));
}

drafter_hparams read_hparams(const gguf_file & f) {
    const std::string arch = get_str(f, "general.architecture");
    if (arch != gs::ARCH) {
        throw incompatible_drafter(format("'%s' is not a %s drafter (general.architecture is '%s')", f.path.c_str(),
                                          gs::ARCH, printable(arch).c_str()));
    }
    drafter_hparams hp;
    hp.block_size     = get_u32(f, gs::KEY_BLOCK_SIZE, 1, 64);
    hp.n_layer        = get_u32(f, gs::KEY_BLOCK_COUNT, 1, 64);
    hp.n_embd         = get_u32(f, gs::KEY_EMBEDDING_LENGTH, 1, 65536);
    hp.n_ff           = get_u32(f, gs::KEY_FEED_FORWARD_LENGTH, 1, 1u << 20);
    hp.n_head         = get_u32(f, gs::KEY_HEAD_COUNT, 1, 1024);
    hp.n_head_kv      = get_u32(f, gs::KEY_HEAD_COUNT_KV, 1, 1024);
    hp.head_dim       = get_u32(f, gs::KEY_KEY_LENGTH, 2, 1024);
    hp.rms_eps        = get_f32(f, gs::KEY_RMS_EPS);
    hp.rope_freq_base = get_f32(f, gs::KEY_ROPE_FREQ_BASE);
    hp.rope_mode      = get_u32(f, gs::KEY_ROPE_MODE, 0, GGML_ROPE_TYPE_NEOX);
    hp.fusion         = parse_fusion(f);
    hp.target_arch    = get_str(f, gs::KEY_TARGET_ARCH);
    hp.target_n_embd  = get_u32(f, gs::KEY_TARGET_N_EMBD, 1, 65536);
    hp.target_n_vocab = get_u32(f, gs::KEY_TARGET_N_VOCAB, 1, 1u << 24);
    hp.target_vocab_hash = get_str(f, gs::KEY_TARGET_VOCAB_HASH);
    hp.n_vocab_draft  = get_u32(f, gs::KEY_DRAFT_VOCAB_SIZE, 0, hp.target_n_vocab);
    hp.tree_parents   = get_tree_parents(f);
    hp.accept_rates   = get_accept_rates(f);

    const char * path = f.path.c_str();
    if (hp.rope_mode != 0 && hp.rope_mode != GGML_ROPE_TYPE_NEOX) {
        throw incompatible_drafter(format("drafter file '%s': rope mode %d (expected 0 or %d)", path, hp.rope_mode, GGML_ROPE_TYPE_NEOX));
    }
    if (hp.n_embd != hp.target_n_embd) {
        throw incompatible_drafter(format("drafter file '%s': n_embd %d differs from target.n_embd %d", path, hp.n_embd, hp.target_n_embd));
    }
    if (hp.n_head % hp.n_head_kv != 0) {
        throw incompatible_drafter(format("drafter file '%s': head_count %d is not a multiple of head_count_kv %d", path,
                                          hp.n_head, hp.n_head_kv));
    }
    if (hp.head_dim % 2 != 0) {
        throw incompatible_drafter(format("drafter file '%s': key_length %d is odd (rope needs pairs)", path, hp.head_dim));
    }
    if (hp.n_vocab_draft == 0) {
        hp.n_vocab_draft = hp.target_n_vocab;
    }
    return hp;
}

// ---- target identity -------------------------------------------------------------------------

target_identity identity_of(const llama_model * model) {
    target_identity id;
    char arch[256];
    if (llama_model_meta_val_str(model, "general.architecture", arch, sizeof(arch)) >= 0) {
        id.arch = arch;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    id.n_embd = llama_model_n_embd(model);
    char n_embd[32];
    const std::string key = id.arch + ".embedding_length";
    if (id.n_embd == 0 && llama_model_meta_val_str(model, key.c_str(), n_embd, sizeof(n_embd)) > 0) {
        id.n_embd = std::atoll(n_embd); // a vocab-only model has no hyper-parameters, only its metadata
    }
    id.n_vocab    = llama_vocab_n_tokens(vocab);
    id.vocab_hash = format_hash(vocab_hash(vocab));
    return id;
}

// the same identity from the target GGUF's metadata (token texts as llama_vocab_get_text returns them)
target_identity identity_of(const gguf_file & f) {
    target_identity id;
    id.arch   = get_str(f, "general.architecture");
    id.n_embd = gguf_get_val_u32(f.gguf.get(), require_key(f, id.arch + ".embedding_length", GGUF_TYPE_UINT32));
    const int64_t key = require_key(f, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    if (gguf_get_arr_type(f.gguf.get(), key) != GGUF_TYPE_STRING) {
        throw incompatible_drafter(format("target file '%s': tokenizer.ggml.tokens is not a string array", f.path.c_str()));
    }
    id.n_vocab = (int64_t) gguf_get_arr_n(f.gguf.get(), key);
    uint64_t h = FNV_OFFSET;
    for (int64_t i = 0; i < id.n_vocab; ++i) {
        h = fnv1a_add(h, gguf_get_arr_str(f.gguf.get(), key, i));
    }
    id.vocab_hash = format_hash(h);
    return id;
}

void check_identity(const drafter_hparams & hp, const target_identity & id, const std::string & path_dft) {
    const char * path = path_dft.c_str();
    if (hp.target_arch != id.arch) {
        throw incompatible_drafter(format("drafter '%s' was made for a '%s' target, the target is '%s'", path,
                                          printable(hp.target_arch).c_str(), printable(id.arch).c_str()));
    }
    if (hp.target_n_embd != id.n_embd) {
        throw incompatible_drafter(format("drafter '%s': target n_embd %d does not match the target's n_embd %" PRId64,
                                          path, hp.target_n_embd, id.n_embd));
    }
    if (hp.target_n_vocab != id.n_vocab) {
        throw incompatible_drafter(format("drafter '%s': target vocab (%d tokens) does not match the target's vocab (%" PRId64 " tokens)",
                                          path, hp.target_n_vocab, id.n_vocab));
    }
    if (hp.target_vocab_hash != id.vocab_hash) {
        throw incompatible_drafter(format("drafter '%s': target vocab hash %s does not match the target's vocab hash %s",
                                          path, printable(hp.target_vocab_hash).c_str(), id.vocab_hash.c_str()));
    }
}

// ---- tensors ---------------------------------------------------------------------------------

// what a tensor may be: a drafter weight matrix, a drafter F32 vector, the i32 d2t, or a target embedding / LM head
enum class tensor_kind { WEIGHT, NORM, IDS, TARGET };

bool type_allowed(tensor_kind kind, enum ggml_type type) {
    switch (kind) {
        case tensor_kind::WEIGHT:
            return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0;
        case tensor_kind::NORM:   return type == GGML_TYPE_F32;
        case tensor_kind::IDS:    return type == GGML_TYPE_I32;
        case tensor_kind::TARGET:
            // the LM head goes through mul_mat and the embedding through get_rows: integer types and the
            // activation-only q8_1 / q8_k have no dot product on the CPU (a null kernel, found by fuzzing)
            return type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
                   (ggml_is_quantized(type) && type != GGML_TYPE_Q8_1 && type != GGML_TYPE_Q8_K);
    }
    return false;
}

const char * allowed_types(tensor_kind kind) {
    switch (kind) {
        case tensor_kind::WEIGHT: return "f32, f16, q8_0 or q4_0";
        case tensor_kind::NORM:   return "f32";
        case tensor_kind::IDS:    return "i32";
        case tensor_kind::TARGET: return "f32, f16, bf16 or a quantized weight type";
    }
    return "";
}

// the metadata tensor `name` of f, checked for shape [ne0, ne1] and type; nullptr if optional and absent
ggml_tensor * find_tensor(const gguf_file & f, const std::string & name, int64_t ne0, int64_t ne1, tensor_kind kind,
                          bool optional = false) {
    ggml_tensor * t = ggml_get_tensor(f.meta.get(), name.c_str());
    if (!t) {
        if (optional) {
            return nullptr;
        }
        throw incompatible_drafter(format("%s file '%s' has no tensor %s", f.what.c_str(), f.path.c_str(), name.c_str()));
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
        throw incompatible_drafter(format("%s file '%s': tensor %s has shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                                          "] (expected [%" PRId64 ", %" PRId64 "])", f.what.c_str(), f.path.c_str(), name.c_str(),
                                          t->ne[0], t->ne[1], t->ne[2], t->ne[3], ne0, ne1));
    }
    if (!type_allowed(kind, t->type)) {
        throw incompatible_drafter(format("%s file '%s': tensor %s has type %s (expected %s)", f.what.c_str(), f.path.c_str(),
                                          name.c_str(), ggml_type_name(t->type), allowed_types(kind)));
    }
    return t;
}

uint64_t tensor_file_offset(const gguf_file & f, const ggml_tensor * meta) {
    const int64_t id = gguf_find_tensor(f.gguf.get(), ggml_get_name(meta));
    return gguf_get_data_offset(f.gguf.get()) + gguf_get_tensor_offset(f.gguf.get(), id);
}

void check_in_file(const gguf_file & f, const char * name, uint64_t offset, uint64_t n_bytes) {
    if (offset > f.size || n_bytes > f.size - offset) {
        throw model_error(format("%s file '%s' is truncated: tensor %s needs bytes up to %" PRIu64 ", the file has %" PRIu64,
                                 f.what.c_str(), f.path.c_str(), name, offset + n_bytes, f.size));
    }
}

// a weight tensor for the metadata tensor `meta` of f, to be read whole
ggml_tensor * add_tensor(drafter_weights & w, std::vector<tensor_load> & loads, const gguf_file & f, ggml_tensor * meta) {
    const uint64_t offset = tensor_file_offset(f, meta);
    check_in_file(f, ggml_get_name(meta), offset, ggml_nbytes(meta));
    ggml_tensor * t = ggml_dup_tensor(w.ctx.get(), meta);
    ggml_set_name(t, ggml_get_name(meta));
    loads.push_back({t, &f, {{offset, ggml_nbytes(meta)}}});
    return t;
}

std::vector<llama_token> read_d2t(const gguf_file & f, const drafter_hparams & hp) {
    ggml_tensor * meta = find_tensor(f, gs::TENSOR_D2T, hp.n_vocab_draft, 1, tensor_kind::IDS);
    const uint64_t offset = tensor_file_offset(f, meta);
    check_in_file(f, gs::TENSOR_D2T, offset, ggml_nbytes(meta));
    std::vector<llama_token> d2t(hp.n_vocab_draft);
    file_ptr fp(std::fopen(f.path.c_str(), "rb"));
    if (!fp || fseeko(fp.get(), (off_t) offset, SEEK_SET) != 0 ||
        std::fread(d2t.data(), sizeof(llama_token), d2t.size(), fp.get()) != d2t.size()) {
        throw model_error(format("cannot read tensor %s from '%s'", gs::TENSOR_D2T, f.path.c_str()));
    }
    for (size_t j = 0; j < d2t.size(); ++j) {
        if (d2t[j] < 0 || d2t[j] >= hp.target_n_vocab) {
            throw incompatible_drafter(format("drafter file '%s': d2t[%zu] = %d is not a target token id (n_vocab %d)",
                                              f.path.c_str(), j, d2t[j], hp.target_n_vocab));
        }
    }
    return d2t;
}

void add_drafter_tensors(drafter_weights & w, std::vector<tensor_load> & loads, const gguf_file & f) {
    const drafter_hparams & hp = w.hparams;
    const int64_t n_embd = hp.n_embd;
    const int64_t n_q    = (int64_t) hp.n_head * hp.head_dim;
    const int64_t n_kv   = (int64_t) hp.n_head_kv * hp.head_dim;
    if (hp.fusion == fusion_kind::LSTM) {
        for (int l = 0; l < gs::LSTM_LAYERS; ++l) {
            const int64_t n_in = l == 0 ? 2 * n_embd : n_embd;
            w.lstm_w[l] = add_tensor(w, loads, f, find_tensor(f, gs::tensor_name(gs::TENSOR_LSTM_WEIGHT, l), n_in, 4 * n_embd, tensor_kind::WEIGHT));
            w.lstm_b[l] = add_tensor(w, loads, f, find_tensor(f, gs::tensor_name(gs::TENSOR_LSTM_BIAS, l), 4 * n_embd, 1, tensor_kind::NORM));
        }
    } else {
        w.fc_w = add_tensor(w, loads, f, find_tensor(f, gs::TENSOR_FC_WEIGHT, 2 * n_embd, n_embd, tensor_kind::WEIGHT));
        w.fc_b = add_tensor(w, loads, f, find_tensor(f, gs::TENSOR_FC_BIAS, n_embd, 1, tensor_kind::NORM));
    }
    w.layers.resize(hp.n_layer);
    for (int il = 0; il < hp.n_layer; ++il) {
        drafter_layer & layer = w.layers[il];
        auto weight = [&](const char * templ, int64_t ne0, int64_t ne1) {
            return add_tensor(w, loads, f, find_tensor(f, gs::tensor_name(templ, il), ne0, ne1, tensor_kind::WEIGHT));
        };
        auto norm = [&](const char * templ) {
            return add_tensor(w, loads, f, find_tensor(f, gs::tensor_name(templ, il), n_embd, 1, tensor_kind::NORM));
        };
        layer.attn_norm = il == 0 ? nullptr : norm(gs::TENSOR_ATTN_NORM);
        layer.ffn_norm  = norm(gs::TENSOR_FFN_NORM);
        layer.wq        = weight(gs::TENSOR_ATTN_Q, n_embd, n_q);
        layer.wk        = weight(gs::TENSOR_ATTN_K, n_embd, n_kv);
        layer.wv        = weight(gs::TENSOR_ATTN_V, n_embd, n_kv);
        layer.wo        = weight(gs::TENSOR_ATTN_OUT, n_q, n_embd);
        layer.ffn_gate  = weight(gs::TENSOR_FFN_GATE, n_embd, hp.n_ff);
        layer.ffn_up    = weight(gs::TENSOR_FFN_UP, n_embd, hp.n_ff);
        layer.ffn_down  = weight(gs::TENSOR_FFN_DOWN, hp.n_ff, n_embd);
    }
}

// the type of the gathered LM head. A drafter pass reads the whole head, so it is memory-bound: a
// k-quant (slow batched matmul), F16 or BF16 (twice the bytes) becomes Q8_0, the CPU's fastest batched
// path, which holds the target's rows to within its own rounding, where rows of n_embd fill its blocks;
// F32 (exact references), Q8_0 and Q4_0 stay as they are
enum ggml_type head_type(enum ggml_type target_type, int64_t n_embd) {
    switch (target_type) {
        case GGML_TYPE_F32: case GGML_TYPE_Q8_0: case GGML_TYPE_Q4_0:
            return target_type;
        default:
            return n_embd % ggml_blck_size(GGML_TYPE_Q8_0) == 0 ? GGML_TYPE_Q8_0 : target_type;
    }
}

// token embedding and LM head from the target file; a reduced vocab gathers the d2t rows of the LM head
void add_target_tensors(drafter_weights & w, std::vector<tensor_load> & loads, const gguf_file & f) {
    const drafter_hparams & hp = w.hparams;
    ggml_tensor * embd_meta = find_tensor(f, gs::TARGET_TENSOR_TOKEN_EMBD, hp.n_embd, hp.target_n_vocab, tensor_kind::TARGET);
    ggml_tensor * head_meta = find_tensor(f, gs::TARGET_TENSOR_OUTPUT, hp.n_embd, hp.target_n_vocab, tensor_kind::TARGET, true);
    w.tok_embd_tgt = add_tensor(w, loads, f, embd_meta);
    if (!head_meta) {
        head_meta = embd_meta; // tied embeddings
    }
    if (w.d2t.empty()) {
        w.lm_head = head_meta == embd_meta ? w.tok_embd_tgt : add_tensor(w, loads, f, head_meta);
        return;
    }
    // rows of any type are stored independently, so the head is gathered row by row
    w.lm_head = ggml_new_tensor_2d(w.ctx.get(), head_type(head_meta->type, hp.n_embd), hp.n_embd, hp.n_vocab_draft);
    ggml_set_name(w.lm_head, "lm_head_draft");
    const uint64_t base     = tensor_file_offset(f, head_meta);
    const uint64_t row_size = head_meta->nb[1];
    check_in_file(f, ggml_get_name(head_meta), base, ggml_nbytes(head_meta));
    tensor_load load = {w.lm_head, &f, {}, head_meta->type};
    for (llama_token id : w.d2t) {
        load.runs.push_back({base + (uint64_t) id * row_size, row_size});
    }
    loads.push_back(std::move(load));
}

void read_tensor(const tensor_load & load) {
    const gguf_file & f = *load.src;
    file_ptr fp(std::fopen(f.path.c_str(), "rb"));
    if (!fp) {
        throw model_error(format("cannot open %s file '%s'", f.what.c_str(), f.path.c_str()));
    }
    const enum ggml_type src_type = load.src_type == GGML_TYPE_COUNT ? load.dst->type : load.src_type;
    const bool   convert = src_type != load.dst->type;
    const int64_t n_per_row = load.dst->ne[0];
    const size_t src_row = ggml_row_size(src_type, n_per_row);
    const size_t n_stage = convert ? READ_CHUNK / src_row * src_row : READ_CHUNK; // whole rows when converting
    std::vector<uint8_t> stage, converted;
    std::vector<float> rows_f32;
    stage.reserve(n_stage);
    size_t dst_offset = 0;
    auto flush = [&]() {
        const uint8_t * data = stage.data();
        size_t n_bytes = stage.size();
        if (convert) {
            const int64_t n_rows = (int64_t) (stage.size() / src_row);
            rows_f32.resize((size_t) (n_rows * n_per_row));
            ggml_get_type_traits(src_type)->to_float(stage.data(), rows_f32.data(), n_rows * n_per_row);
            converted.resize(ggml_row_size(load.dst->type, n_per_row) * n_rows);
            n_bytes = ggml_quantize_chunk(load.dst->type, rows_f32.data(), converted.data(), 0, n_rows, n_per_row, nullptr);
            data = converted.data();
        }
        ggml_backend_tensor_set(load.dst, data, dst_offset, n_bytes);
        dst_offset += n_bytes;
        stage.clear();
    };
    for (const auto & [offset, n_bytes] : load.runs) {
        if (fseeko(fp.get(), (off_t) offset, SEEK_SET) != 0) {
            throw model_error(format("cannot seek to byte %" PRIu64 " of '%s'", offset, f.path.c_str()));
        }
        for (uint64_t left = n_bytes; left > 0;) {
            const size_t n_take = (size_t) std::min<uint64_t>(left, n_stage - stage.size());
            const size_t n_old  = stage.size();
            stage.resize(n_old + n_take);
            if (std::fread(stage.data() + n_old, 1, n_take, fp.get()) != n_take) {
                throw model_error(format("cannot read tensor %s from '%s'", ggml_get_name(load.dst), f.path.c_str()));
            }
            left -= n_take;
            if (stage.size() == n_stage) {
                flush();
            }
        }
    }
    if (!stage.empty()) {
        flush();
    }
}

} // namespace

uint64_t vocab_hash(const llama_vocab * vocab) {
    uint64_t h = FNV_OFFSET;
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token id = 0; id < n_vocab; ++id) {
        h = fnv1a_add(h, llama_vocab_get_text(vocab, id));
    }
    return h;
}

void drafter_load(drafter_weights & w, const std::string & path_dft, const std::string & path_tgt,
                  const llama_model * model_tgt, ggml_backend_buffer_type_t buft) {
    const gguf_file file_dft = open_gguf("drafter", path_dft);
    const gguf_file file_tgt = open_gguf("target", path_tgt);

    w.hparams = read_hparams(file_dft);
    check_identity(w.hparams, model_tgt ? identity_of(model_tgt) : identity_of(file_tgt), path_dft);
    if (w.hparams.n_vocab_draft != w.hparams.target_n_vocab) {
        w.d2t = read_d2t(file_dft, w.hparams);
    }

    const size_t n_tensors = 8 + 16 * (size_t) w.hparams.n_layer;
    w.ctx.reset(ggml_init({/*.mem_size =*/ n_tensors * ggml_tensor_overhead(), /*.mem_buffer =*/ nullptr, /*.no_alloc =*/ true}));
    std::vector<tensor_load> loads;
    add_drafter_tensors(w, loads, file_dft);
    add_target_tensors(w, loads, file_tgt);

    w.buf.reset(ggml_backend_alloc_ctx_tensors_from_buft(w.ctx.get(), buft));
    if (!w.buf) {
        throw model_error(format("cannot allocate the weights of drafter '%s' on %s", path_dft.c_str(), ggml_backend_buft_name(buft)));
    }
    ggml_backend_buffer_set_usage(w.buf.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    for (const tensor_load & load : loads) {
        read_tensor(load);
    }
}

} // namespace fe
