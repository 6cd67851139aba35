// The GEGLU projection on the shapes the models run (sd15 at 512², batch 2 and 16 with guidance;
// SDXL's widths are the same as sd15's levels 1 and 2): the binary's two-kernel form (cuBLASLt GEMM
// into 2·inner columns, then csrc/fused.cu's bias_geglu) against csrc/geglu_gemm.cu's one GEMM with
// the GEGLU in its epilogue, in the configuration the binary runs and three others. A benchmark, not
// a test: it prints a table. Each output is compared with an f32 reference (a plain GPU kernel on
// the same inputs): the largest absolute difference per form, and fused against the binary's.
//
// Built by scripts/gpu/geglu-bench.sh (nvcc, sm_90a, the CUDA runtime static, cuBLASLt shared).
// Each time is the mean of `iters` launches after a warm-up, by CUDA events; the fused variants (and the
// two-kernel form once more) are timed three times in turn and the least of each is printed.
#include "../csrc/fused.cu"
#include "../csrc/geglu_gemm.cu"
#include "common.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CL(x)                                                                                    \
    do {                                                                                         \
        cublasStatus_t s_ = (x);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                       \
            fprintf(stderr, "%s:%d %s: cublas status %d\n", __FILE__, __LINE__, #x, (int)s_);    \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

using H16 = cutlass::half_t;

// f32 reference from the original (not interleaved) weight: w (2·inner, k), b (2·inner,).
__global__ void reference(const __half *x, const __half *w, const __half *b, float *out, int m, int inner, int k) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= inner) return;
    for (int r = blockIdx.y; r < m; r += gridDim.y) {
    float a = 0.f, g = 0.f;
    for (int i = 0; i < k; ++i) {
        float xv = __half2float(x[(size_t)r * k + i]);
        a += xv * __half2float(w[(size_t)j * k + i]);
        g += xv * __half2float(w[(size_t)(inner + j) * k + i]);
    }
    a += __half2float(b[j]);
    g += __half2float(b[inner + j]);
    out[(size_t)r * inner + j] = a * (0.5f * g * (1.0f + erff(g * 0.70710678118654752f)));
    }
}

__global__ void max_diff(const __half *y, const float *ref, size_t n, unsigned int *bits) {
    float d = 0.f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d = fmaxf(d, fabsf(__half2float(y[i]) - ref[i]));
    atomicMax(bits, __float_as_uint(d));
}

__global__ void max_diff_h(const __half *y, const __half *z, size_t n, unsigned int *bits) {
    float d = 0.f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d = fmaxf(d, fabsf(__half2float(y[i]) - __half2float(z[i])));
    atomicMax(bits, __float_as_uint(d));
}

struct Case {
    const char *name;
    int m, k, inner;
};

typedef int (*Fused)(const void *, const void *, const void *, void *, int64_t, int64_t, int64_t, cudaStream_t);

using namespace shoal_geglu;
using Coop128x256 = Config<H16, Shape<_128, _256, _64>, Shape<_1, _1, _1>, Coop>;
using CoopErff = Config<H16, Shape<_256, _128, _64>, Shape<_1, _1, _1>, Coop, false>;
using Ping = Config<H16, Shape<_64, _256, _64>, Shape<_1, _1, _1>, Pingpong>;
using Ping128 = Config<H16, Shape<_128, _128, _64>, Shape<_1, _1, _1>, Pingpong>;
using Ping128C2 = Config<H16, Shape<_128, _128, _64>, Shape<_2, _1, _1>, Pingpong>;
using Coop256C2 = Config<H16, Shape<_256, _128, _64>, Shape<_2, _1, _1>, Coop>;

// The same mainloop with CUTLASS's own TMA epilogue writing all 2·inner columns (no bias, no
// GEGLU): what the GEMM costs in CUTLASS, apart from the GEGLU epilogue.
template <class T, class TileShape, class ClusterShape, class Schedule, class EpiSchedule> struct FullConfig {
    using Epi = typename cutlass::epilogue::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
        cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::RowMajor, 8, T,
        cutlass::layout::RowMajor, 8, EpiSchedule>::CollectiveOp;
    using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, cutlass::layout::RowMajor, 8, T,
        cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
        cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
        Schedule>::CollectiveOp;
    using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epi>;
    using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};
using FullCoop = FullConfig<H16, Shape<_128, _256, _64>, Shape<_1, _1, _1>, Coop,
                            cutlass::epilogue::TmaWarpSpecializedCooperative>;

template <class Cfg>
int run_full(const void *x, const void *w, void *out, int64_t m, int64_t n, int64_t k, cudaStream_t stream) {
    using Gemm = typename Cfg::Gemm;
    typename Gemm::GemmKernel::StrideA sa = make_stride(k, Int<1>{}, m * k);
    typename Gemm::GemmKernel::StrideB sb = make_stride(k, Int<1>{}, n * k);
    typename Gemm::GemmKernel::StrideD sd = make_stride(n, Int<1>{}, m * n);
    cutlass::KernelHardwareInfo hw;
    hw.sm_count = sm_count();
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {(int)m, (int)n, (int)k, 1},
                                  {static_cast<const H16 *>(x), sa, static_cast<const H16 *>(w), sb},
                                  {{1.0f, 0.0f}, nullptr, sd, static_cast<H16 *>(out), sd},
                                  hw};
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return 1;
    if (Gemm::get_workspace_size(args) != 0) return 1;
    if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess) return 2;
    if (gemm.run(stream) != cutlass::Status::kSuccess) return 2;
    return 0;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 100;
    std::vector<Case> cases = {
        {"l0 b2", 2 * 4096, 320, 1280},  {"l1 b2", 2 * 1024, 640, 2560},  {"l2 b2", 2 * 256, 1280, 5120},
        {"l0 b16", 16 * 4096, 320, 1280}, {"l1 b16", 16 * 1024, 640, 2560}, {"l2 b16", 16 * 256, 1280, 5120},
        {"mid b16", 16 * 64, 1280, 5120},
    };
    struct Variant {
        const char *name;
        Fused f;
    } variants[] = {
        {"the binary's choice", run_default<H16>},
        {"coop 256x128 (binary, large)", run<Large<H16>, H16>},
        {"coop 256x128, erff", run<CoopErff, H16>},
        {"coop 128x256", run<Coop128x256, H16>},
        {"pingpong 64x128 (binary, small)", run<Small<H16>, H16>},
        {"pingpong 64x256", run<Ping, H16>},
        {"pingpong 128x128", run<Ping128, H16>},
        {"pingpong 128x128 cluster 2x1", run<Ping128C2, H16>},
        {"coop 256x128 cluster 2x1", run<Coop256C2, H16>},
    };
    const int nv = sizeof(variants) / sizeof(variants[0]);
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cublasLtHandle_t lt;
    CL(cublasLtCreate(&lt));
    size_t wsz = 32u << 20;
    void *ws;
    CK(cudaMalloc(&ws, wsz));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    unsigned int *dbits;
    CK(cudaMalloc(&dbits, sizeof(unsigned int)));
    auto diff = [&](const void *y, const float *ref, const void *z, size_t n) {
        CK(cudaMemsetAsync(dbits, 0, sizeof(unsigned int), st));
        if (ref)
            max_diff<<<512, 256, 0, st>>>((const __half *)y, ref, n, dbits);
        else
            max_diff_h<<<512, 256, 0, st>>>((const __half *)y, (const __half *)z, n, dbits);
        unsigned int b;
        CK(cudaMemcpyAsync(&b, dbits, sizeof(b), cudaMemcpyDeviceToHost, st));
        CK(cudaStreamSynchronize(st));
        float f;
        memcpy(&f, &b, sizeof(f));
        return f;
    };

    printf("| shape | M × K → 2·inner | form | ms | TFLOP/s | max abs vs f32 | max abs vs binary's |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    srand(7);
    for (const Case &c : cases) {
        const int m = c.m, k = c.k, inner = c.inner, n = 2 * inner;
        std::vector<__half> hx((size_t)m * k), hw((size_t)n * k), hwi((size_t)n * k), hb(n), hbi(n);
        auto u = [] { return (float)rand() / RAND_MAX * 2.f - 1.f; };
        for (auto &v : hx) v = __float2half(u());
        float sc = 1.f / sqrtf((float)k);
        for (auto &v : hw) v = __float2half(u() * sc * 2.f);
        for (auto &v : hb) v = __float2half(u() * 0.5f);
        // The interleave of geglu_gemm.cu: blocks of 8 value rows, then the 8 gate rows of the same outputs.
        for (int q = 0; q < inner / 8; ++q)
            for (int i = 0; i < 8; ++i) {
                memcpy(&hwi[(size_t)(16 * q + i) * k], &hw[(size_t)(8 * q + i) * k], k * sizeof(__half));
                memcpy(&hwi[(size_t)(16 * q + 8 + i) * k], &hw[(size_t)(inner + 8 * q + i) * k], k * sizeof(__half));
                hbi[16 * q + i] = hb[8 * q + i];
                hbi[16 * q + 8 + i] = hb[inner + 8 * q + i];
            }
        __half *x, *w, *wi, *b, *bi, *h, *y0, *y1;
        float *ref;
        CK(cudaMalloc(&x, hx.size() * 2));
        CK(cudaMalloc(&w, hw.size() * 2));
        CK(cudaMalloc(&wi, hw.size() * 2));
        CK(cudaMalloc(&b, n * 2));
        CK(cudaMalloc(&bi, n * 2));
        CK(cudaMalloc(&h, (size_t)m * n * 2));
        CK(cudaMalloc(&y0, (size_t)m * inner * 2));
        CK(cudaMalloc(&y1, (size_t)m * inner * 2));
        CK(cudaMalloc(&ref, (size_t)m * inner * 4));
        CK(cudaMemcpy(x, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(w, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(wi, hwi.data(), hw.size() * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(b, hb.data(), n * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(bi, hbi.data(), n * 2, cudaMemcpyHostToDevice));
        reference<<<dim3((inner + 255) / 256, std::min(m, 8192)), 256, 0, st>>>(x, w, b, ref, m, inner, k);
        CK(cudaGetLastError());

        // The binary's form: yᵀ (n × m, column-major) = w (k × n)ᵀ · xᵀ (k × m), then bias_geglu.
        cublasLtMatmulDesc_t op;
        CL(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
        CL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
        CL(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
        cublasLtMatrixLayout_t la, lb, lc;
        CL(cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, k, n, k));
        CL(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, k, m, k));
        CL(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16F, n, m, n));
        cublasLtMatmulPreference_t pref;
        CL(cublasLtMatmulPreferenceCreate(&pref));
        CL(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof(wsz)));
        cublasLtMatmulHeuristicResult_t heur;
        int found = 0;
        CL(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, 1, &heur, &found));
        int ids[3] = {-1, -1, -1};
        const cublasLtMatmulAlgoConfigAttributes_t which[3] = {
            CUBLASLT_ALGO_CONFIG_TILE_ID, CUBLASLT_ALGO_CONFIG_STAGES_ID, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID};
        for (int i = 0; i < 3; ++i) {
            size_t got = 0;
            cublasLtMatmulAlgoConfigGetAttribute(&heur.algo, which[i], &ids[i], sizeof(int), &got);
        }
        float alpha = 1.f, beta = 0.f;
        int per = 8;
        dim3 grid((unsigned)std::min<long>((inner + 256L * per - 1) / (256L * per), 65536L), (unsigned)std::min(m, 65535));
        auto binary = [&] {
            CL(cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, h, lc, h, lc, &heur.algo, ws, wsz, st));
            bias_geglu_f16<<<grid, 256, 0, st>>>((const __half *)h, b, y0, (uint64_t)m, (uint64_t)inner);
        };
        double flop = 2.0 * m * n * (double)k;
        binary();
        CK(cudaStreamSynchronize(st));
        for (int i = 0; i < 3; ++i) binary();
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < iters; ++i) binary();
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float t0 = ms_per(e0, e1, iters);
        // The GEMM alone, for the split of the binary's time.
        for (int i = 0; i < 3; ++i)
            CL(cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, h, lc, h, lc, &heur.algo, ws, wsz, st));
        CK(cudaEventRecord(e0, st));
        for (int i = 0; i < iters; ++i)
            CL(cublasLtMatmul(lt, op, &alpha, w, la, x, lb, &beta, h, lc, h, lc, &heur.algo, ws, wsz, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float tg = ms_per(e0, e1, iters);
        binary();
        float d0 = diff(y0, ref, nullptr, (size_t)m * inner);
        printf("| %s | %d × %d → %d | cuBLASLt + bias_geglu (binary) | %.4f | %.0f | %.2e | — |\n", c.name, m, k, n, t0,
               flop / t0 / 1e9, d0);
        printf("| %s | | · of which the GEMM (cuBLASLt tile id %d, stages id %d, cluster id %d) | %.4f | %.0f | | |\n",
               c.name, ids[0], ids[1], ids[2], tg, flop / tg / 1e9);
        if (run_full<FullCoop>(x, w, h, m, n, k, st) == 0) {
            for (int i = 0; i < 3; ++i) run_full<FullCoop>(x, w, h, m, n, k, st);
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < iters; ++i) run_full<FullCoop>(x, w, h, m, n, k, st);
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            float tf = ms_per(e0, e1, iters);
            printf("| %s | | CUTLASS GEMM alone, coop 128x256, TMA epilogue, 2·inner columns | %.4f | %.0f | | |\n",
                   c.name, tf, flop / tf / 1e9);
        } else {
            printf("| %s | | CUTLASS GEMM alone: not run (%s) | | | | |\n", c.name, last_error());
        }
        // Every variant's output checked once, then all timed three times in turn (the least kept):
        // a kernel's time moves by several per cent with its place in a long sequence.
        std::vector<int> ok(nv, 0);
        std::vector<float> best(nv, 1e30f), d1(nv, 0.f), d2(nv, 0.f);
        for (int v = 0; v < nv; ++v) {
            CK(cudaMemsetAsync(y1, 0, (size_t)m * inner * 2, st));
            int rc = variants[v].f(x, wi, bi, y1, m, n, k, st);
            if (rc != 0) {
                printf("| %s | | %s | rc %d (%s) | | | |\n", c.name, variants[v].name, rc, last_error());
                continue;
            }
            CK(cudaStreamSynchronize(st));
            ok[v] = 1;
            d1[v] = diff(y1, ref, nullptr, (size_t)m * inner);
            d2[v] = diff(y1, nullptr, y0, (size_t)m * inner);
        }
        float t_two = t0;
        for (int round = 0; round < 3; ++round) {
            for (int v = 0; v < nv; ++v) {
                if (!ok[v]) continue;
                for (int i = 0; i < 3; ++i) variants[v].f(x, wi, bi, y1, m, n, k, st);
                CK(cudaEventRecord(e0, st));
                for (int i = 0; i < iters; ++i) variants[v].f(x, wi, bi, y1, m, n, k, st);
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                best[v] = std::min(best[v], ms_per(e0, e1, iters));
            }
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < iters; ++i) binary();
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            t_two = std::min(t_two, ms_per(e0, e1, iters));
        }
        printf("| %s | | cuBLASLt + bias_geglu, the least of its four times | %.4f | %.0f | | |\n", c.name, t_two,
               flop / t_two / 1e9);
        for (int v = 0; v < nv; ++v) {
            if (!ok[v]) continue;
            printf("| %s | | fused, %s | %.4f | %.0f | %.2e | %.2e |\n", c.name, variants[v].name, best[v],
                   flop / best[v] / 1e9, d1[v], d2[v]);
        }
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(op);
        for (void *p : {(void *)x, (void *)w, (void *)wi, (void *)b, (void *)bi, (void *)h, (void *)y0, (void *)y1,
                        (void *)ref})
            CK(cudaFree(p));
    }
    return 0;
}
