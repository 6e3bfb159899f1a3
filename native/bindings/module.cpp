// NB_MODULE(_native): exposes the engine, its parameter structs and the typed exceptions. No logic.
#include "falcon-edge/acceptance.h"
#include "falcon-edge/drafter.h"
#include "falcon-edge/engine.h"
#include "falcon-edge/falcon-proposer.h"
#include "falcon-edge/errors.h"
#include "falcon-edge/gguf-schema.h"

#include "compute-guard.h"

#include <nanobind/nanobind.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

namespace nb = nanobind;
using namespace nb::literals;

void fe_bind_drafter(nb::module_ & m);


static void bind_params(nb::module_ & m) {
    nb::class_<fe::sampling_params>(m, "SamplingParams")
        .def(nb::init<>())
        .def_rw("temperature", &fe::sampling_params::temperature)
        .def_rw("top_k", &fe::sampling_params::top_k)
        .def_rw("top_p", &fe::sampling_params::top_p)
        .def_rw("min_p", &fe::sampling_params::min_p)
        .def_rw("repeat_penalty", &fe::sampling_params::repeat_penalty)
        .def_rw("repeat_last_n", &fe::sampling_params::repeat_last_n)
        .def_rw("seed", &fe::sampling_params::seed);
    nb::class_<fe::spec_params>(m, "SpecParams")
        .def(nb::init<>())
        .def_rw("mode", &fe::spec_params::mode)
        .def_rw("n_nodes_max", &fe::spec_params::n_nodes_max)
        .def_rw("depth_max", &fe::spec_params::depth_max)
        .def_rw("ngram_min", &fe::spec_params::ngram_min)
        .def_rw("ngram_max", &fe::spec_params::ngram_max)
        .def_rw("ngram_branches", &fe::spec_params::ngram_branches)
        .def_rw("top_k_draft", &fe::spec_params::top_k_draft)
        .def_rw("n_passes", &fe::spec_params::n_passes)
        .def_rw("preset_parent", &fe::spec_params::preset_parent)
        .def_rw("preset_rank", &fe::spec_params::preset_rank);
    nb::class_<fe::generate_params>(m, "GenerateParams")
        .def(nb::init<>())
        .def_rw("max_tokens", &fe::generate_params::max_tokens)
        .def_rw("stop", &fe::generate_params::stop)
        .def_rw("ignore_eos", &fe::generate_params::ignore_eos)
        .def_rw("sampling", &fe::generate_params::sampling)
        .def_rw("spec", &fe::generate_params::spec);
    nb::class_<fe::engine_params>(m, "EngineParams")
        .def(nb::init<>())
        .def_rw("n_ctx", &fe::engine_params::n_ctx)
        .def_rw("n_batch", &fe::engine_params::n_batch)
        .def_rw("n_threads", &fe::engine_params::n_threads)
        .def_rw("n_gpu_layers", &fe::engine_params::n_gpu_layers)
        .def_rw("n_seq_max", &fe::engine_params::n_seq_max)
        .def_rw("flash_attn", &fe::engine_params::flash_attn)
        .def_rw("path_head", &fe::engine_params::path_head)
        .def_rw("verbose", &fe::engine_params::verbose);
    nb::class_<fe::gen_stats>(m, "GenStats")
        .def_ro("n_prompt", &fe::gen_stats::n_prompt)
        .def_ro("n_prefill", &fe::gen_stats::n_prefill)
        .def_ro("n_generated", &fe::gen_stats::n_generated)
        .def_ro("n_cycles", &fe::gen_stats::n_cycles)
        .def_ro("n_drafted", &fe::gen_stats::n_drafted)
        .def_ro("n_accepted", &fe::gen_stats::n_accepted)
        .def_ro("n_drafted_ngram", &fe::gen_stats::n_drafted_ngram)
        .def_ro("n_accepted_ngram", &fe::gen_stats::n_accepted_ngram)
        .def_ro("n_draft_passes", &fe::gen_stats::n_draft_passes)
        .def_ro("drafter_joined", &fe::gen_stats::drafter_joined)
        .def_ro("n_prompt_features", &fe::gen_stats::n_prompt_features)
        .def_ro("t_prefill_us", &fe::gen_stats::t_prefill_us)
        .def_ro("t_draft_us", &fe::gen_stats::t_draft_us)
        .def_ro("t_verify_us", &fe::gen_stats::t_verify_us)
        .def_ro("t_sample_us", &fe::gen_stats::t_sample_us)
        .def_ro("n_head_rows", &fe::gen_stats::n_head_rows)
        .def_ro("t_head_us", &fe::gen_stats::t_head_us)
        .def_ro("t_total_us", &fe::gen_stats::t_total_us)
        .def_ro("n_nodes_max", &fe::gen_stats::n_nodes_max)
        .def_ro("verify_units", &fe::gen_stats::verify_units);
    nb::class_<fe::gen_result>(m, "GenResult")
        .def_ro("tokens", &fe::gen_result::tokens)
        .def_prop_ro("text", [](const fe::gen_result & r) { return nb::bytes(r.text.data(), r.text.size()); })
        .def_ro("finish_reason", &fe::gen_result::finish_reason)
        .def_ro("stats", &fe::gen_result::stats);
}

static void bind_engine(nb::module_ & m) {
    nb::class_<fe::engine>(m, "Engine")
        .def(nb::init<const std::string &, const fe::engine_params &>(), "path"_a, "params"_a,
             nb::call_guard<compute_guard>())
        .def("tokenize", &fe::engine::tokenize, "text"_a, "add_special"_a, "parse_special"_a)
        .def("token_to_piece", [](const fe::engine & e, int32_t id, bool special) {
                 const std::string s = e.token_to_piece(id, special);
                 return nb::bytes(s.data(), s.size());
             }, "id"_a, "special"_a = false)
        .def("meta", &fe::engine::meta, "key"_a)
        .def_prop_ro("n_vocab", &fe::engine::n_vocab)
        .def_prop_ro("n_embd", &fe::engine::n_embd)
        .def_prop_ro("n_ctx", &fe::engine::n_ctx)
        .def_prop_ro("token_bos", &fe::engine::token_bos)
        .def_prop_ro("token_eos", &fe::engine::token_eos)
        .def("is_eog", &fe::engine::is_eog, "id"_a)
        .def("has_proposer", &fe::engine::has_proposer, "mode"_a)
        .def("load_drafter", [](fe::engine & e, const std::string & path_dft, int32_t n_threads, int32_t n_window) {
                 fe::drafter_params dp;
                 dp.n_ctx = e.n_ctx();
                 dp.n_threads = n_threads;
                 dp.n_window = n_window;
                 auto dft = std::make_unique<fe::drafter>(path_dft, e.path(), e.model(), dp);
                 e.set_proposer("falcon", std::make_unique<fe::falcon_proposer>(std::move(dft)));
             }, "path"_a, "n_threads"_a = 0, "n_window"_a = fe::drafter_params().n_window, nb::call_guard<compute_guard>(),
             "loads a falcon-sar drafter for this target and enables mode 'falcon'")
        .def("set_verify_cost", &fe::engine::set_verify_cost, "cost"_a, nb::call_guard<nb::gil_scoped_release>())
        .def("verify_cost", &fe::engine::verify_cost, nb::call_guard<nb::gil_scoped_release>())
        .def("verify_cost_estimate", &fe::engine::verify_cost_estimate, nb::call_guard<nb::gil_scoped_release>(),
             "the verify-cost curve as currently estimated: the measured one refined by the decodes seen since")
        .def("measure_verify_cost", &fe::engine::measure_verify_cost, "n_max"_a, "n_reps"_a, "n_depth"_a,
             nb::call_guard<compute_guard>())
        .def_prop_ro("path_head", &fe::engine::path_head,
                     "whether trees get their logits from the path head (the LM head for the rows the walk reads only)")
        .def("set_head_cost", &fe::engine::set_head_cost, "row"_a, "extra"_a, nb::call_guard<nb::gil_scoped_release>())
        .def("head_cost", &fe::engine::head_cost, nb::call_guard<nb::gil_scoped_release>(), "(row, extra): the path head's cost relative to one plain step")
        .def("measure_head_cost", &fe::engine::measure_head_cost, "n_rows"_a, "n_reps"_a,
             nb::call_guard<compute_guard>(),
             "(row, extra) in microseconds: a one-row path-head call, each further row of an n_rows call")
        .def("measure_draft_cost", &fe::engine::measure_draft_cost, "tokens"_a, "spec"_a, "n_nodes_max"_a, "n_reps"_a,
             nb::call_guard<compute_guard>(),
             "(draft, step, pair) in microseconds: the drafter drafting one cycle's tree after `tokens`, one plain "
             "step, one pair of the drafter's catch-up over `tokens`")
        .def("set_draft_cost", &fe::engine::set_draft_cost, "cycle"_a, "pair"_a, nb::call_guard<nb::gil_scoped_release>())
        .def("draft_cost", &fe::engine::draft_cost, nb::call_guard<nb::gil_scoped_release>(),
             "the drafter's cost of a cycle relative to one plain step: measured apart, then running")
        .def("reset", &fe::engine::reset, nb::call_guard<nb::gil_scoped_release>())
        .def("cancel", &fe::engine::cancel)
        .def("cached_tokens", &fe::engine::cached_tokens, nb::call_guard<nb::gil_scoped_release>())
        .def("features", [](fe::engine & e, const std::vector<llama_token> & tokens) {
                 std::vector<float> f;
                 {
                     compute_guard guard;
                     f = e.features(tokens);
                 }
                 return nb::bytes(reinterpret_cast<const char *>(f.data()), f.size() * sizeof(float));
             }, "tokens"_a, "post-norm hidden states as float32 bytes [n_tokens * n_embd]")
        .def("self_distill", [](fe::engine & e, const std::vector<std::vector<llama_token>> & prompts, int32_t max_tokens,
                                int32_t n_parallel, nb::object on_done) {
                 fe::self_distill_params p;
                 p.max_tokens = max_tokens;
                 p.n_parallel = n_parallel;
                 nb::list out;
                 auto as_tuple = [](const fe::distilled_sequence & s) {
                     return nb::make_tuple(s.tokens, s.n_prompt, s.finished,
                                           nb::bytes(reinterpret_cast<const char *>(s.features.data()), s.features.size() * sizeof(float)));
                 };
                 std::vector<nb::object> collected(on_done.is_none() ? prompts.size() : 0);
                 fe::distilled_callback cb = [&](int32_t i, fe::distilled_sequence && s) {
                     nb::gil_scoped_acquire gil;
                     if (on_done.is_none()) {
                         collected[i] = as_tuple(s);
                         return true;
                     }
                     return nb::cast<bool>(on_done(i, as_tuple(s)));
                 };
                 {
                     compute_guard guard;
                     e.self_distill(prompts, p, cb);
                 }
                 if (!on_done.is_none()) {
                     return nb::object(nb::none());
                 }
                 for (auto & o : collected) {
                     out.append(o);
                 }
                 return nb::object(out);
             }, "prompts"_a, "max_tokens"_a, "n_parallel"_a, "on_done"_a = nb::none(),
             "greedy answers with features, each as (tokens, n_prompt, finished, float32 bytes [n_tokens * n_embd]): "
             "with on_done, on_done(i_prompt, answer) -> bool is called as each finishes (False stops) and None is "
             "returned; without, the list of all answers in prompt order")
        .def("prefill_only", &fe::engine::prefill_only, "tokens"_a, nb::call_guard<compute_guard>())
        .def("tree_logits", [](fe::engine & e, const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents,
                               bool path_head) {
                 std::vector<float> l;
                 {
                     compute_guard guard;
                     l = e.tree_logits(tokens, parents, path_head);
                 }
                 return nb::bytes(reinterpret_cast<const char *>(l.data()), l.size() * sizeof(float));
             }, "tokens"_a, "parents"_a, "path_head"_a = false,
             "logits of every node as float32 bytes [n_nodes * n_vocab], from the decode or from the path head")
        .def("generate", [](fe::engine & e, const std::vector<llama_token> & prompt, const fe::generate_params & gp,
                            nb::object on_chunk) {
                 fe::chunk_callback cb;
                 if (!on_chunk.is_none()) {
                     cb = [&on_chunk](const std::vector<llama_token> & tokens, const std::string & text) {
                         nb::gil_scoped_acquire gil;
                         nb::object r = on_chunk(nb::cast(tokens), nb::bytes(text.data(), text.size()));
                         return r.is_none() || nb::cast<bool>(r);
                     };
                 }
                 compute_guard guard;
                 return e.generate(prompt, gp, cb);
             }, "prompt"_a, "params"_a, "on_chunk"_a = nb::none());
}

static void bind_acceptance(nb::module_ & m) {
    nb::class_<fe::acceptance_stats>(m, "AcceptanceStats",
                                     "a proposer's calibrated acceptance rates (fe::acceptance_stats; see acceptance.h)")
        .def(nb::init<int32_t, double, double>(), "n_keys"_a, "decay"_a, "request_weight"_a)
        .def("rate", &fe::acceptance_stats::rate, "key"_a, "prior"_a)
        .def("mean", &fe::acceptance_stats::mean, "key"_a, "prior"_a)
        .def("observe", [](fe::acceptance_stats & s, const std::vector<llama_token> & tokens, const std::vector<int32_t> & parents,
                           const std::vector<int32_t> & buckets, uint8_t origin, int32_t accepted) {
                 const fe::tree t = fe::tree_from_parents(tokens, parents, origin, buckets);
                 s.observe(t, fe::tree_path(t, accepted), origin);
             }, "tokens"_a, "parents"_a, "buckets"_a, "origin"_a, "accepted"_a,
             "one verified tree (nodes as data, every drafted node offered by origin) whose accepted path ends at node accepted")
        .def("start_request", &fe::acceptance_stats::start_request)
        .def_prop_ro("n_keys", &fe::acceptance_stats::n_keys);
    m.attr("ORIGIN_DRAFTER") = (int) fe::ORIGIN_DRAFTER;
    m.attr("ORIGIN_NGRAM") = (int) fe::ORIGIN_NGRAM;
}

NB_MODULE(_native, m) {
    m.doc() = "falcon-edge C++ engine (see falcon_edge for the public API)";

    auto base = nb::exception<fe::error>(m, "FalconEdgeError", PyExc_RuntimeError);
    nb::exception<fe::model_error>(m, "ModelLoadError", base);
    nb::exception<fe::incompatible_drafter>(m, "IncompatibleDrafterError", base);
    nb::exception<fe::context_full>(m, "ContextFullError", base);
    nb::exception<fe::aborted>(m, "GenerationAborted", base);

    m.def("gguf_schema", &fe::gguf_schema::all);
    m.def("accept_key", &fe::gguf_schema::accept_key, nb::arg("prob"), nb::arg("depth"));
    m.def("accept_prob_edges", []() {
        return std::vector<float>(std::begin(fe::gguf_schema::ACCEPT_PROB_EDGES), std::end(fe::gguf_schema::ACCEPT_PROB_EDGES));
    });
    m.def("llama_system_info", []() { return std::string(llama_print_system_info()); });

    bind_params(m);
    bind_engine(m);
    bind_acceptance(m);
    fe_bind_drafter(m);
}
