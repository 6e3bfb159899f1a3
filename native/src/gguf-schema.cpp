// Implements the two helpers of gguf-schema.h: template expansion and the list of all strings.
#include "falcon-edge/gguf-schema.h"

namespace fe::gguf_schema {

std::string tensor_name(const char * templ, int layer) {
    static const std::string placeholder = "{layer}";
    std::string name = templ;
    const size_t at = name.find(placeholder);
    if (at != std::string::npos) {
        name.replace(at, placeholder.size(), std::to_string(layer));
    }
    return name;
}

std::map<std::string, std::string> all() {
    return {
        {"ARCH",                     ARCH},
        {"KEY_BLOCK_SIZE",           KEY_BLOCK_SIZE},
        {"KEY_BLOCK_COUNT",          KEY_BLOCK_COUNT},
        {"KEY_EMBEDDING_LENGTH",     KEY_EMBEDDING_LENGTH},
        {"KEY_FEED_FORWARD_LENGTH",  KEY_FEED_FORWARD_LENGTH},
        {"KEY_HEAD_COUNT",           KEY_HEAD_COUNT},
        {"KEY_HEAD_COUNT_KV",        KEY_HEAD_COUNT_KV},
        {"KEY_KEY_LENGTH",           KEY_KEY_LENGTH},
        {"KEY_RMS_EPS",              KEY_RMS_EPS},
        {"KEY_ROPE_FREQ_BASE",       KEY_ROPE_FREQ_BASE},
        {"KEY_ROPE_MODE",            KEY_ROPE_MODE},
        {"KEY_FUSION",               KEY_FUSION},
        {"KEY_DRAFT_VOCAB_SIZE",     KEY_DRAFT_VOCAB_SIZE},
        {"KEY_TARGET_ARCH",          KEY_TARGET_ARCH},
        {"KEY_TARGET_N_EMBD",        KEY_TARGET_N_EMBD},
        {"KEY_TARGET_N_VOCAB",       KEY_TARGET_N_VOCAB},
        {"KEY_TARGET_VOCAB_HASH",    KEY_TARGET_VOCAB_HASH},
        {"KEY_TREE_PARENTS",         KEY_TREE_PARENTS},
        {"KEY_ACCEPT_RATES",         KEY_ACCEPT_RATES},
        {"FUSION_LSTM",              FUSION_LSTM},
        {"FUSION_LINEAR",            FUSION_LINEAR},
        {"TENSOR_LSTM_WEIGHT",       TENSOR_LSTM_WEIGHT},
        {"TENSOR_LSTM_BIAS",         TENSOR_LSTM_BIAS},
        {"TENSOR_FC_WEIGHT",         TENSOR_FC_WEIGHT},
        {"TENSOR_FC_BIAS",           TENSOR_FC_BIAS},
        {"TENSOR_ATTN_NORM",         TENSOR_ATTN_NORM},
        {"TENSOR_ATTN_Q",            TENSOR_ATTN_Q},
        {"TENSOR_ATTN_K",            TENSOR_ATTN_K},
        {"TENSOR_ATTN_V",            TENSOR_ATTN_V},
        {"TENSOR_ATTN_OUT",          TENSOR_ATTN_OUT},
        {"TENSOR_FFN_NORM",          TENSOR_FFN_NORM},
        {"TENSOR_FFN_GATE",          TENSOR_FFN_GATE},
        {"TENSOR_FFN_UP",            TENSOR_FFN_UP},
        {"TENSOR_FFN_DOWN",          TENSOR_FFN_DOWN},
        {"TENSOR_D2T",               TENSOR_D2T},
        {"TARGET_TENSOR_TOKEN_EMBD", TARGET_TENSOR_TOKEN_EMBD},
        {"TARGET_TENSOR_OUTPUT",     TARGET_TENSOR_OUTPUT},
    };
}

} // namespace fe::gguf_schema
