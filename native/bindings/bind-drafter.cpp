// Python binding of fe::drafter (class Drafter): argument conversion only, no logic.
#include "falcon-edge/drafter.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/gguf-schema.h"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <stdexcept>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using feat_in  = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using tok_in   = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;
using rows_out = nb::ndarray<nb::numpy, float, nb::ndim<2>>;

rows_out to_numpy(std::vector<float> && values, size_t n_cols) {
    auto * owned = new std::vector<float>(std::move(values));
    nb::capsule owner(owned, [](void * p) noexcept { delete (std::vector<float> *) p; });
    return rows_out(owned->data(), {owned->size() / n_cols, n_cols}, owner);
}

std::pair<rows_out, rows_out> outputs(const fe::drafter & dft, std::vector<float> && feat, std::vector<float> && logits) {
    return {to_numpy(std::move(feat), dft.hparams().n_embd), to_numpy(std::move(logits), dft.hparams().n_vocab_draft)};
}

nb::dict hparams_dict(const fe::drafter_hparams & hp) {
    nb::dict d;
    d["block_size"]        = hp.block_size;
    d["n_layer"]           = hp.n_layer;
    d["n_embd"]            = hp.n_embd;
    d["n_ff"]              = hp.n_ff;
    d["n_head"]            = hp.n_head;
    d["n_head_kv"]         = hp.n_head_kv;
    d["head_dim"]          = hp.head_dim;
    d["rms_eps"]           = hp.rms_eps;
    d["rope_freq_base"]    = hp.rope_freq_base;
    d["rope_mode"]         = hp.rope_mode;
    d["fusion"]            = hp.fusion == fe::fusion_kind::LSTM ? fe::gguf_schema::FUSION_LSTM : fe::gguf_schema::FUSION_LINEAR;
    d["n_vocab_draft"]     = hp.n_vocab_draft;
    d["target_arch"]       = hp.target_arch;
    d["target_n_embd"]     = hp.target_n_embd;
    d["target_n_vocab"]    = hp.target_n_vocab;
    d["target_vocab_hash"] = hp.target_vocab_hash;
    d["tree_parents"]      = hp.tree_parents;
    d["accept_rates"]      = hp.accept_rates;
    return d;
}

void push_pairs(fe::drafter & dft, feat_in feat, tok_in tok) {
    const size_t n = tok.size();
    if (feat.size() != n * (size_t) dft.hparams().n_embd) {
        throw std::invalid_argument(fe::format("push_pairs: feat must hold n_embd %d floats per token: %zu tokens need %zu, got %zu",
                                               dft.hparams().n_embd, n, n * (size_t) dft.hparams().n_embd, feat.size()));
    }
    dft.push_pairs(feat.data(), tok.data(), (int32_t) n);
}

// feat [n_blocks, k, n_embd], tok [n_blocks, k]
std::pair<rows_out, rows_out> eval_blocks(fe::drafter & dft, const std::vector<int32_t> & parents, feat_in feat, tok_in tok) {
    const size_t k      = dft.hparams().block_size;
    const size_t n_feat = k * dft.hparams().n_embd;
    if (feat.size() != parents.size() * n_feat || tok.size() != parents.size() * k) {
        throw std::invalid_argument(fe::format("eval_blocks: %zu blocks need feat [n_blocks, k, n_embd] = %zu floats and tok [n_blocks, k] = %zu ids, got %zu and %zu",
                                               parents.size(), parents.size() * n_feat, parents.size() * k, feat.size(), tok.size()));
    }
    std::vector<fe::drafter_block> blocks(parents.size());
    for (size_t b = 0; b < blocks.size(); ++b) {
        blocks[b].parent = parents[b];
        blocks[b].feat.assign(feat.data() + b * n_feat, feat.data() + (b + 1) * n_feat);
        blocks[b].tok.assign(tok.data() + b * k, tok.data() + (b + 1) * k);
    }
    std::vector<float> out_feat, out_logits;
    dft.eval_blocks(blocks, out_feat, out_logits);
    return outputs(dft, std::move(out_feat), std::move(out_logits));
}

} // namespace

void fe_bind_drafter(nb::module_ & m) {
    nb::class_<fe::drafter>(m, "Drafter", "The Falcon drafter runtime (fe::drafter); see native/include/falcon-edge/drafter.h")
        .def("__init__",
             [](fe::drafter * self, const std::string & path_dft, const std::string & path_tgt, uintptr_t model_ptr,
                int32_t n_ctx, int32_t n_scratch, int32_t n_batch, int32_t n_threads, int32_t n_window) {
                 fe::drafter_params params;
                 params.n_ctx     = n_ctx;
                 params.n_scratch = n_scratch;
                 params.n_batch   = n_batch;
                 params.n_threads = n_threads;
                 params.n_window  = n_window;
                 new (self) fe::drafter(path_dft, path_tgt, (const llama_model *) model_ptr, params);
             },
             "path_dft"_a, "path_tgt"_a, "model_ptr"_a = 0, nb::kw_only(), "n_ctx"_a = 4096, "n_scratch"_a = 256,
             "n_batch"_a = 512, "n_threads"_a = 0, "n_window"_a = fe::drafter_params().n_window,
             "Loads a drafter; model_ptr is Llama.model (0: identity from the target GGUF).")
        .def_prop_ro("hparams", [](const fe::drafter & dft) { return hparams_dict(dft.hparams()); })
        .def_prop_ro("n_pairs", &fe::drafter::n_pairs)
        .def_prop_ro("t_eval_us", &fe::drafter::t_eval_us)
        .def("push_pairs", &push_pairs, "feat"_a, "tok"_a, "Appends committed pairs: feat [n, n_embd] float32, tok [n] int32.")
        .def("push_unread", [](fe::drafter & dft, tok_in tok) { dft.push_unread(tok.data(), (int32_t) tok.size()); }, "tok"_a,
             "Appends committed pairs without features (tok [n] int32): the context starts after them.")
        .def("truncate", &fe::drafter::truncate, "n_pairs"_a)
        .def("eval_context",
             [](fe::drafter & dft) {
                 std::vector<float> out_feat, out_logits;
                 dft.eval_context(out_feat, out_logits);
                 return outputs(dft, std::move(out_feat), std::move(out_logits));
             },
             "Returns (feat [m, n_embd], logits [m, n_vocab_draft]) of the last m = min(k, n_pairs) positions.")
        .def("catch_up", &fe::drafter::catch_up, "n_pending"_a = 0,
             "Where more than n_pending pairs beyond the last k are pending, evaluates them without outputs.")
        .def("eval_blocks", &eval_blocks, "parents"_a, "feat"_a, "tok"_a,
             "Evaluates tree blocks: feat [n_blocks, k, n_embd], tok [n_blocks, k]; returns (feat, logits) rows per block.")
        .def("draft_to_target", &fe::drafter::draft_to_target, "id_draft"_a);

    m.def("vocab_hash", [](uintptr_t model_ptr) {
        return fe::vocab_hash(llama_model_get_vocab((const llama_model *) model_ptr));
    }, "model_ptr"_a, "FNV-1a 64 of the token texts of Llama.model (an int).");
}
