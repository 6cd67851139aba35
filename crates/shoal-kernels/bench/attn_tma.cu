// The many-keys attention kernel on the copy engine (csrc/fused.cu `attn_tma`: TMA loads on
// mbarriers, warpgroups with no block-wide barrier, optionally FA3's intra-warpgroup overlap) in
// its configurations (session 15 timed them beside the cp.async kernel it replaced), on sd15's
// level-0 self-attention at 512² with guidance at batch 16 (16 × 8 heads × 4096², width 40) and SDXL's width 64 (16 × 10
// heads). A benchmark, not a test: it prints a table. Every row is the mean of `iters` launches by
// CUDA events after a warm-up, timed in two rounds (the order of the rows reversed in the second),
// and its largest difference from an f32 reference (one thread per query row) on the first image,
// the output poisoned (NaN) before each row.
//   bash scripts/gpu/tma-bench.sh   (builds .gpu/attn_tma here; a GPU script runs `.gpu/attn_tma [iters]`)
#include "../csrc/fused.cu"
#include "common.cuh"

#include <cuda.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

template <typename T, int D, int WG, int STAGES, bool OVL, int EMU>
__global__ void __launch_bounds__(128 * WG, WG == 2 ? 2 : 1)
    tma_k(const __grid_constant__ CUtensorMap tmk, const __grid_constant__ CUtensorMap tmv, const T *q, T *o,
          uint64_t sq, uint64_t skv, uint64_t heads, uint64_t q_sb, uint64_t q_ss, float scale_log2) {
    attn_tma<T, D, WG, STAGES, OVL, EMU>(&tmk, &tmv, q, o, sq, skv, heads, q_sb, q_ss, scale_log2);
}

// The reference: one thread per (head, query row) of the first image, f32 throughout.
template <typename T>
__global__ void attn_ref(const T *q, const T *k, const T *v, float *o, int s, int heads, int d, float scale) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y;
    if (row >= s) return;
    const uint64_t hd = (uint64_t)heads * d;
    const T *qr = q + (uint64_t)row * hd + h * d;
    float qv[64], acc[64];
    for (int i = 0; i < d; ++i) qv[i] = (float)qr[i], acc[i] = 0.0f;
    float m = -INFINITY;
    for (int j = 0; j < s; ++j) {
        const T *kr = k + (uint64_t)j * hd + h * d;
        float x = 0.0f;
        for (int i = 0; i < d; ++i) x += qv[i] * (float)kr[i];
        m = fmaxf(m, x * scale);
    }
    float l = 0.0f;
    for (int j = 0; j < s; ++j) {
        const T *kr = k + (uint64_t)j * hd + h * d;
        const T *vr = v + (uint64_t)j * hd + h * d;
        float x = 0.0f;
        for (int i = 0; i < d; ++i) x += qv[i] * (float)kr[i];
        const float p = expf(x * scale - m);
        l += p;
        for (int i = 0; i < d; ++i) acc[i] += p * (float)vr[i];
    }
    float *orow = o + (uint64_t)row * hd + h * d;
    for (int i = 0; i < d; ++i) orow[i] = acc[i] / l;
}

// A 4-d tensor map (width, heads, tokens, images) over a (b, s, heads·d) tensor with rows `ss` and
// images `sb` elements apart, box (16, 1, 64, 1) in the 32-byte swizzle: attn_tma's operand.
static CUtensorMap tensor_map(const void *p, bool bf16, int d, int heads, int s, int b, uint64_t ss, uint64_t sb) {
    CUtensorMap m;
    cuuint64_t dims[4] = {(cuuint64_t)d, (cuuint64_t)heads, (cuuint64_t)s, (cuuint64_t)b};
    cuuint64_t strides[3] = {(cuuint64_t)d * 2, ss * 2, sb * 2};
    cuuint32_t box[4] = {16, 1, 64, 1}, es[4] = {1, 1, 1, 1};
    CUresult r = cuTensorMapEncodeTiled(&m, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                                        4, const_cast<void *>(p), dims, strides, box, es,
                                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_32B,
                                        CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", (int)r);
        exit(1);
    }
    return m;
}

struct Case {
    int b, heads, s, d;
};

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 50;
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    for (Case c : {Case{16, 8, 4096, 40}, Case{16, 10, 4096, 64}, Case{2, 8, 4096, 40}}) {
        const uint64_t hd = (uint64_t)c.heads * c.d, elems = (uint64_t)c.b * c.s * hd;
        std::vector<__half> hq(elems), hk(elems), hv(elems);
        uint32_t seed = 12345;
        auto rnd = [&]() {
            seed = seed * 1664525u + 1013904223u;
            return ((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
        };
        for (auto &x : hq) x = __float2half(rnd() * 1.5f);
        for (auto &x : hk) x = __float2half(rnd() * 1.5f);
        for (auto &x : hv) x = __float2half(rnd());
        __half *q, *k, *v, *o;
        float *ref;
        CK(cudaMalloc(&q, elems * 2));
        CK(cudaMalloc(&k, elems * 2));
        CK(cudaMalloc(&v, elems * 2));
        CK(cudaMalloc(&o, elems * 2));
        CK(cudaMalloc(&ref, (uint64_t)c.s * hd * 4));
        CK(cudaMemcpy(q, hq.data(), elems * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(k, hk.data(), elems * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(v, hv.data(), elems * 2, cudaMemcpyHostToDevice));
        const float scale = 1.0f / sqrtf((float)c.d), scale_log2 = scale * 1.4426950408889634f;
        attn_ref<__half><<<dim3((c.s + 127) / 128, c.heads, 1), 128, 0, st>>>(q, k, v, ref, c.s, c.heads, c.d, scale);
        CK(cudaStreamSynchronize(st));
        CK(cudaGetLastError());
        std::vector<float> href((uint64_t)c.s * hd);
        CK(cudaMemcpy(href.data(), ref, href.size() * 4, cudaMemcpyDeviceToHost));
        std::vector<__half> ho((uint64_t)c.s * hd);
        const double flop = 4.0 * c.b * c.heads * (double)c.s * c.s * c.d;
        const uint64_t sb = (uint64_t)c.s * hd;
        const CUtensorMap mk = tensor_map(k, false, c.d, c.heads, c.s, c.b, hd, sb);
        const CUtensorMap mv = tensor_map(v, false, c.d, c.heads, c.s, c.b, hd, sb);
        struct Row {
            std::string name;
            std::function<void()> launch;
            float ms[2];
            double err;
        };
        std::vector<Row> rows;
#define TMA(D, WG, STAGES, OVL, EMU)                                                                                \
    if (c.d == D) {                                                                                                \
        CK(cudaFuncSetAttribute(tma_k<__half, D, WG, STAGES, OVL, EMU>, cudaFuncAttributeMaxDynamicSharedMemorySize, \
                                attn_tma_smem(D, 64, STAGES)));                                                    \
        rows.push_back({"tma WG " #WG ", " #STAGES " stages" + std::string(OVL ? ", overlap" : "") +                \
                            (EMU < 0 ? ", no exp (wrong results)" : EMU ? ", " #EMU "/8 exp on FMA" : ""), [&, c]() {  \
                            tma_k<__half, D, WG, STAGES, OVL, EMU>                                                  \
                                <<<dim3((c.s + 64 * WG - 1) / (64 * WG), c.heads, c.b), 128 * WG,                   \
                                   attn_tma_smem(D, 64, STAGES), st>>>(mk, mv, q, o, c.s, c.s, c.heads, sb, hd,     \
                                                                       scale_log2);                                 \
                        }, {0, 0}, 0});                                                                             \
    }
        // Session 15 ran 2, 3 and 4 warpgroups with and without the overlap (docs/KERNELS.md);
        // session 16 runs the fastest, 4 with the overlap, with 0–4 of the 8 column groups'
        // exponentials on the FMA pipe (ex2_fma), and without exponentials (what they cost; wrong results).
        TMA(40, 4, 8, true, 0)
        TMA(40, 4, 8, true, 1)
        TMA(40, 4, 8, true, 2)
        TMA(40, 4, 8, true, 3)
        TMA(40, 4, 8, true, 4)
        TMA(40, 4, 8, true, -1)
        TMA(64, 4, 6, true, 0)
        TMA(64, 4, 6, true, 1)
        TMA(64, 4, 6, true, 2)
        TMA(64, 4, 6, true, 3)
        TMA(64, 4, 6, true, 4)
        TMA(64, 4, 6, true, -1)
        auto time = [&](Row &r, int round) {
            CK(cudaMemsetAsync(o, 0xff, elems * 2, st)); // NaN: every element must be written
            for (int i = 0; i < 3; ++i) r.launch();
            CK(cudaStreamSynchronize(st));
            CK(cudaGetLastError());
            if (round == 0) {
                CK(cudaMemcpy(ho.data(), o, ho.size() * 2, cudaMemcpyDeviceToHost));
                double err = 0.0;
                for (size_t i = 0; i < ho.size(); ++i) {
                    double d = fabs((double)__half2float(ho[i]) - href[i]);
                    err = d == d ? fmax(err, d) : INFINITY;
                }
                r.err = err;
            }
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < iters; ++i) r.launch();
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            CK(cudaGetLastError());
            r.ms[round] = ms_per(e0, e1, iters);
        };
        for (auto &r : rows) time(r, 0);
        for (auto it = rows.rbegin(); it != rows.rend(); ++it) time(*it, 1);
        printf("\n%d×%d heads × %d² width %d (f16), %d iters\n\n", c.b, c.heads, c.s, c.d, iters);
        printf("| kernel | ms (round 1) | ms (round 2) | TFLOP/s | max abs err |\n| --- | --- | --- | --- | --- |\n");
        for (auto &r : rows) {
            float m = fminf(r.ms[0], r.ms[1]);
            printf("| %s | %.3f | %.3f | %.0f | %.2e |\n", r.name.c_str(), r.ms[0], r.ms[1], flop / m * 1e-9, r.err);
        }
        CK(cudaFree(q));
        CK(cudaFree(k));
        CK(cudaFree(v));
        CK(cudaFree(o));
        CK(cudaFree(ref));
    }
    return 0;
}
