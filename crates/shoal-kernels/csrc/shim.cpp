// shoal's host-only shim over the cudnn-frontend graph API: builds one cuDNN
// execution plan per operation shape and executes it on the caller's stream,
// with the caller's device buffers and workspace. No device memory is
// allocated here; cuDNN is loaded at run time (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING),
// so a binary built with this shim starts on machines without cuDNN.
//
// Every entry point returns 0 on success, or writes a message into `err` and
// returns non-zero. No C++ exception crosses the C boundary.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cudnn_frontend.h>

#include <dlfcn.h>

namespace fe = cudnn_frontend;

// The frontend's dynamic loading resolves every cuDNN symbol through this handle.
namespace cudnn_frontend {
void *cudnn_dlhandle = nullptr;
}

struct ShoalPlan {
    std::shared_ptr<fe::graph::Graph> graph;
    int n_uids;
    // SHOAL_CUDNN_PROBE / SHOAL_CUDNN_FASTEST only: what the graph computes, whether its plans were
    // timed, and the plan that runs (-1: the heuristic's choice).
    std::string label;
    bool probe = false;
    mutable bool probed = false;
    mutable int64_t index = -1;
};

namespace {

void put_err(char *err, size_t len, const std::string &msg) {
    if (err == nullptr || len == 0) return;
    std::snprintf(err, len, "%s", msg.c_str());
}

// Opens libcudnn once; false (with the loader's message) when it is not on the library path.
bool load_cudnn(std::string &why) {
    if (fe::cudnn_dlhandle != nullptr) return true;
    for (const char *name : {"libcudnn.so.9", "libcudnn.so"}) {
        fe::cudnn_dlhandle = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
        if (fe::cudnn_dlhandle != nullptr) return true;
    }
    const char *e = dlerror();
    why = std::string("cannot load libcudnn.so.9: ") + (e ? e : "unknown error");
    return false;
}

fe::DataType_t io_type(int dtype) {
    // 0: f16, 1: bf16, 2: f32
    switch (dtype) {
        case 0: return fe::DataType_t::HALF;
        case 1: return fe::DataType_t::BFLOAT16;
        default: return fe::DataType_t::FLOAT;
    }
}

#define SHOAL_TRY(expr, what)                                                        \
    do {                                                                             \
        auto _e = (expr);                                                            \
        if (!_e.is_good()) {                                                         \
            put_err(err, err_len, std::string(what) + ": " + _e.get_message());      \
            return 1;                                                                \
        }                                                                            \
    } while (0)

// Plans built whose engine compiles its kernels at run time (NVRTC, then the driver).
std::atomic<int> g_rtc_plans{0};

bool compiles_at_run_time(const std::vector<fe::BehaviorNote_t> &notes) {
    return std::find(notes.begin(), notes.end(), fe::BehaviorNote_t::RUNTIME_COMPILATION) != notes.end();
}

// SHOAL_CUDNN_PROBE=1 (every graph) or =TEXT (graphs whose label contains TEXT: `sdpa`, `conv`), a
// measurement and not a mode to run the models in: every plan cuDNN offers for the graph is built, and
// on the graph's first run outside a capture each is timed on the caller's buffers (one line per plan
// on stderr, `shoal-cudnn-probe:`); the heuristic's choice stays the one that runs.
bool label_wanted(const std::string &what, const std::string &label) {
    if (what.empty() || what == "0") return false;
    return what == "1" || label.find(what) != std::string::npos;
}

std::string env_text(const char *var) {
    const char *e = std::getenv(var);
    return std::string(e == nullptr ? "" : e);
}

// SHOAL_CUDNN_FASTEST=1 or =TEXT, a measurement as well: as SHOAL_CUDNN_PROBE, and the fastest plan
// of that timing runs from then on (a choice that follows timings, so two processes may pick
// differently and write different bits: session 8's finding; not for the models' default).
bool run_fastest(const std::string &label) {
    static const std::string what = env_text("SHOAL_CUDNN_FASTEST");
    return label_wanted(what, label);
}

bool probe_plans(const std::string &label) {
    static const std::string what = env_text("SHOAL_CUDNN_PROBE");
    return label_wanted(what, label) || run_fastest(label);
}

int finish(std::shared_ptr<fe::graph::Graph> g, cudnnHandle_t handle, int n_uids, std::string label, ShoalPlan **out,
           int64_t *workspace, char *err, size_t err_len) {
    SHOAL_TRY(g->validate(), "validate");
    SHOAL_TRY(g->build_operation_graph(handle), "build_operation_graph");
    const bool all = probe_plans(label);
    if (all) {
        SHOAL_TRY(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::B, fe::HeurMode_t::FALLBACK}),
                  "create_execution_plans");
    } else {
        SHOAL_TRY(g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}), "create_execution_plans");
    }
    SHOAL_TRY(g->check_support(), "check_support");
    SHOAL_TRY(g->build_plans(all ? fe::BuildPlanPolicy_t::ALL : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE), "build_plans");
    std::vector<fe::BehaviorNote_t> chosen;
    if (g->get_behavior_notes(chosen).is_good() && compiles_at_run_time(chosen)) g_rtc_plans++;
    int64_t ws = 0;
    SHOAL_TRY(g->get_workspace_size(ws), "get_workspace_size");
    if (all) {
        for (int64_t i = 0; i < g->get_execution_plan_count(); ++i) {
            int64_t wi = 0;
            if (g->get_workspace_size_plan_at_index(i, wi).is_good()) ws = std::max(ws, wi);
        }
    }
    *workspace = ws;
    *out = new ShoalPlan{std::move(g), n_uids, std::move(label), all};
    return 0;
}

// Times every built plan of `plan` (SHOAL_CUDNN_PROBE): 3 warm-up runs, then the mean of 20 between two events.
void probe(cudnnHandle_t handle, const ShoalPlan *plan, std::unordered_map<int64_t, void *> &pack, void *workspace) {
    plan->probed = true;
    std::string chosen;
    (void)plan->graph->get_plan_name(chosen);
    cudaStream_t stream = nullptr;
    if (fe::detail::get_stream(handle, &stream) != CUDNN_STATUS_SUCCESS) return;
    cudaEvent_t start = nullptr, stop = nullptr;
    fe::detail::cuda_event_create(&start);
    fe::detail::cuda_event_create(&stop);
    const int64_t n = plan->graph->get_execution_plan_count();
    float best_ms = 0.f;
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
        std::string name;
        if (plan->graph->get_plan_name_at_index(i, name).is_bad()) continue;
        bool ok = true;
        for (int w = 0; w < 3 && ok; ++w) ok = plan->graph->execute_plan_at_index(handle, pack, workspace, i).is_good();
        if (!ok) {
            std::fprintf(stderr, "shoal-cudnn-probe: %s | %lld | %s | failed\n", plan->label.c_str(), (long long)i,
                         name.c_str());
            continue;
        }
        fe::detail::cuda_event_record(start, stream);
        for (int r = 0; r < 20; ++r) (void)plan->graph->execute_plan_at_index(handle, pack, workspace, i);
        fe::detail::cuda_event_record(stop, stream);
        fe::detail::cuda_event_synchronize(stop);
        float ms = 0.f;
        fe::detail::cuda_event_elapsed_time(&ms, start, stop);
        if (best < 0 || ms < best_ms) {
            best = i;
            best_ms = ms;
        }
        std::fprintf(stderr, "shoal-cudnn-probe: %s | %lld | %s | %.4f ms%s\n", plan->label.c_str(), (long long)i,
                     name.c_str(), ms / 20.f, name == chosen ? " | heuristic's choice" : "");
    }
    fe::detail::cuda_event_destroy(start);
    fe::detail::cuda_event_destroy(stop);
    if (best >= 0 && run_fastest(plan->label)) {
        plan->index = best;
        std::string name;
        (void)plan->graph->get_plan_name_at_index(best, name);
        std::fprintf(stderr, "shoal-cudnn-probe: %s | runs %lld | %s%s\n", plan->label.c_str(), (long long)best,
                     name.c_str(), name == chosen ? " | heuristic's choice" : "");
    }
}

// SHOAL_CUDNN_DYNAMIC=1: graphs are built with dynamic shapes and share one kernel cache per
// handle, so an engine that compiles its kernels at run time compiles once for every shape it
// can serve instead of once per shape (the first image on a fresh machine).
bool dynamic_shapes() {
    static const bool on = [] {
        const char *e = std::getenv("SHOAL_CUDNN_DYNAMIC");
        return e != nullptr && e[0] == '1';
    }();
    return on;
}

std::shared_ptr<fe::KernelCache> kernel_cache(void *handle) {
    static std::mutex mu;
    static std::unordered_map<void *, std::shared_ptr<fe::KernelCache>> caches;
    std::lock_guard<std::mutex> lock(mu);
    auto &c = caches[handle];
    if (!c) c = std::make_shared<fe::KernelCache>();
    return c;
}

std::shared_ptr<fe::graph::Graph> new_graph(void *handle, bool dynamic) {
    auto g = std::make_shared<fe::graph::Graph>();
    if (dynamic) g->set_dynamic_shape_enabled(true).set_kernel_cache(kernel_cache(handle));
    return g;
}

// Builds the plan of `make(true)` (dynamic shapes, shared kernel cache) when that is on, and
// of `make(false)` when it is off or that graph cannot be built.
template <typename Make>
int finish_any(Make make, cudnnHandle_t handle, int n_uids, const std::string &label, ShoalPlan **out,
               int64_t *workspace, char *err, size_t err_len) {
    if (dynamic_shapes() && finish(make(true), handle, n_uids, label, out, workspace, err, err_len) == 0) return 0;
    return finish(make(false), handle, n_uids, label, out, workspace, err, err_len);
}

}  // namespace

extern "C" {

int shoal_cudnn_handle_create(void **handle, void *stream, char *err, size_t err_len) {
    try {
        std::string why;
        if (!load_cudnn(why)) {
            put_err(err, err_len, why);
            return 1;
        }
        cudnnHandle_t h = nullptr;
        auto st = fe::detail::create_handle(&h);
        if (st != CUDNN_STATUS_SUCCESS) {
            put_err(err, err_len, std::string("cudnnCreate: ") + fe::detail::get_error_string(st));
            return 1;
        }
        st = fe::detail::set_stream(h, static_cast<cudaStream_t>(stream));
        if (st != CUDNN_STATUS_SUCCESS) {
            put_err(err, err_len, std::string("cudnnSetStream: ") + fe::detail::get_error_string(st));
            return 1;
        }
        *handle = h;
        return 0;
    } catch (const std::exception &e) {
        put_err(err, err_len, e.what());
        return 1;
    }
}

int shoal_cudnn_rtc_plans(void) { return g_rtc_plans.load(); }

size_t shoal_cudnn_version(void) {
    try {
        std::string why;
        if (!load_cudnn(why)) return 0;
        return static_cast<size_t>(fe::detail::get_backend_version());
    } catch (...) {
        return 0;
    }
}

// Convolution (cross-correlation), optional per-channel bias, optional residual:
// y = conv(x, w) + bias + residual. `nhwc` selects channels-last strides for x, y and
// the residual (dims stay n, c, h, w) and KRSC for w.
// uids: x 1, w 2, bias 3, y 4, residual 5.
int shoal_cudnn_conv_build(void *handle, int dtype, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                           int64_t r, int64_t s, int64_t pad, int64_t stride, int nhwc, int has_bias,
                           int has_residual, ShoalPlan **out, int64_t *workspace, char *err, size_t err_len) {
    try {
        auto make = [&](bool dynamic) {
            auto g = new_graph(handle, dynamic);
            g->set_io_data_type(io_type(dtype))
                .set_intermediate_data_type(fe::DataType_t::FLOAT)
                .set_compute_data_type(fe::DataType_t::FLOAT);
            auto strides = [nhwc](int64_t, int64_t c_, int64_t h_, int64_t w_) -> std::vector<int64_t> {
                if (nhwc) return {c_ * h_ * w_, 1, w_ * c_, c_};
                return {c_ * h_ * w_, h_ * w_, w_, 1};
            };
            auto X = g->tensor(fe::graph::Tensor_attributes().set_name("x").set_uid(1).set_dim({n, c, h, w}).set_stride(
                strides(n, c, h, w)));
            auto W = g->tensor(fe::graph::Tensor_attributes().set_name("w").set_uid(2).set_dim({k, c, r, s}).set_stride(
                strides(k, c, r, s)));
            auto opts = fe::graph::Conv_fprop_attributes()
                            .set_padding({pad, pad})
                            .set_stride({stride, stride})
                            .set_dilation({1, 1});
            auto Y = g->conv_fprop(X, W, opts);
            int64_t ho = (h + 2 * pad - r) / stride + 1;
            int64_t wo = (w + 2 * pad - s) / stride + 1;
            if (has_bias) {
                auto B = g->tensor(
                    fe::graph::Tensor_attributes().set_name("b").set_uid(3).set_dim({1, k, 1, 1}).set_stride({k, 1, k, k}));
                Y = g->pointwise(Y, B, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
            }
            if (has_residual) {
                auto Z = g->tensor(fe::graph::Tensor_attributes().set_name("z").set_uid(5).set_dim({n, k, ho, wo}).set_stride(
                    strides(n, k, ho, wo)));
                Y = g->pointwise(Y, Z, fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD));
            }
            Y->set_output(true).set_uid(4).set_dim({n, k, ho, wo}).set_stride(strides(n, k, ho, wo));
            return g;
        };
        const std::string label = "conv " + std::to_string(n) + "x" + std::to_string(c) + "x" + std::to_string(h) +
                                  "x" + std::to_string(w) + " -> " + std::to_string(k) + " " + std::to_string(r) +
                                  "x" + std::to_string(s) + "/" + std::to_string(stride) + (nhwc ? " nhwc" : "") +
                                  (has_bias ? " bias" : "") + (has_residual ? " res" : "");
        return finish_any(make, static_cast<cudnnHandle_t>(handle), 5, label, out, workspace, err, err_len);
    } catch (const std::exception &e) {
        put_err(err, err_len, e.what());
        return 1;
    }
}

// Scaled dot-product attention, inference (no statistics). Every tensor has
// logical dims (b, heads, seq, d) with caller-given strides, so the (b, seq,
// heads * d) rows that the projections produce need no transpose.
// uids: q 1, k 2, v 3, o 4.
int shoal_cudnn_sdpa_build(void *handle, int dtype, int64_t b, int64_t heads, int64_t sq, int64_t skv, int64_t d,
                           const int64_t *q_stride, const int64_t *k_stride, const int64_t *v_stride,
                           const int64_t *o_stride, float scale, int causal, ShoalPlan **out, int64_t *workspace,
                           char *err, size_t err_len) {
    try {
        auto make = [&](bool dynamic) {
            auto g = new_graph(handle, dynamic);
            g->set_io_data_type(io_type(dtype))
                .set_intermediate_data_type(fe::DataType_t::FLOAT)
                .set_compute_data_type(fe::DataType_t::FLOAT);
            auto vec = [](const int64_t *p) { return std::vector<int64_t>(p, p + 4); };
            auto Q = g->tensor(
                fe::graph::Tensor_attributes().set_name("q").set_uid(1).set_dim({b, heads, sq, d}).set_stride(vec(q_stride)));
            auto K = g->tensor(fe::graph::Tensor_attributes().set_name("k").set_uid(2).set_dim({b, heads, skv, d}).set_stride(
                vec(k_stride)));
            auto V = g->tensor(fe::graph::Tensor_attributes().set_name("v").set_uid(3).set_dim({b, heads, skv, d}).set_stride(
                vec(v_stride)));
            auto opts = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(false).set_attn_scale(scale);
            if (causal) opts.set_causal_mask(true);
            auto outs = g->sdpa(Q, K, V, opts);
            outs[0]->set_output(true).set_uid(4).set_dim({b, heads, sq, d}).set_stride(vec(o_stride));
            return g;
        };
        const std::string label = "sdpa b" + std::to_string(b) + " h" + std::to_string(heads) + " q" +
                                  std::to_string(sq) + " k" + std::to_string(skv) + " d" + std::to_string(d);
        return finish_any(make, static_cast<cudnnHandle_t>(handle), 4, label, out, workspace, err, err_len);
    } catch (const std::exception &e) {
        put_err(err, err_len, e.what());
        return 1;
    }
}

// Runs a plan. `ptrs[i]` is the buffer of uid i + 1 (null for uids the plan does not use).
int shoal_cudnn_execute(void *handle, const ShoalPlan *plan, void *const *ptrs, void *workspace, char *err,
                        size_t err_len) {
    try {
        std::unordered_map<int64_t, void *> pack;
        for (int i = 0; i < plan->n_uids; ++i) {
            if (ptrs[i] != nullptr) pack.emplace(i + 1, ptrs[i]);
        }
        if (plan->probe && !plan->probed) {
            cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
            cudaStream_t stream = nullptr;
            if (fe::detail::get_stream(static_cast<cudnnHandle_t>(handle), &stream) == CUDNN_STATUS_SUCCESS &&
                fe::detail::cuda_stream_is_capturing(stream, &capturing) == cudaSuccess && capturing == cudaStreamCaptureStatusNone)
                probe(static_cast<cudnnHandle_t>(handle), plan, pack, workspace);
        }
        if (plan->index >= 0) {
            SHOAL_TRY(plan->graph->execute_plan_at_index(static_cast<cudnnHandle_t>(handle), pack, workspace,
                                                         plan->index),
                      "execute");
        } else {
            SHOAL_TRY(plan->graph->execute(static_cast<cudnnHandle_t>(handle), pack, workspace), "execute");
        }
        return 0;
    } catch (const std::exception &e) {
        put_err(err, err_len, e.what());
        return 1;
    }
}

void shoal_cudnn_plan_free(ShoalPlan *plan) { delete plan; }

}  // extern "C"
