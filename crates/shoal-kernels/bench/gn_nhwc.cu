// Where the channels-last GroupNorm's time goes, kernel by kernel, on the shapes the models run
// (sd15 at 512², batch 2 and 16 with guidance; the VAE's decode of one image). A benchmark,
// not a test: it prints a table.
//
// Built by scripts/gpu/gn-bench.sh (nvcc, sm_90, the CUDA runtime linked statically); it
// includes csrc/fused.cu, so the kernels timed here are the ones the binary loads. Each time is
// the mean of `iters` launches (or CUDA graph replays, as the UNet's captured call runs them)
// after a warm-up, by CUDA events: the partial sums, the finalize (per-channel scale and shift),
// the apply (+SiLU), and the three as one graph; then, as graphs too, two candidates for the
// partial sums (not in the binary) and their largest difference from the output of the binary's.
#include "../csrc/fused.cu"
#include "common.cuh"

#include <cstdio>
#include <cstdlib>
#include <vector>

// The candidate reduction of the partial sums (fused.cu's gn_partial_nhwc, WARP_REDUCE).
template <typename T>
__global__ void gn_partial_nhwc_warp_reduce(const T *x, float *partial, uint64_t hw, uint64_t c, uint64_t groups,
                                            uint64_t chunk_px) {
    gn_partial_nhwc<T, true>(x, partial, hw, c, groups, chunk_px);
}

struct Shape {
    int n, c, side;
};

static const int THREADS = 256;

struct Plan {
    uint64_t n, c, hw, groups, chunks, chunk_px;
    size_t shared;
};

// The host's launch arithmetic of shoal-kernels' GroupNormOp::stats (fused/norm.rs): at least
// `per_block` elements a block (16384 there), at most `max_chunks` chunks an image (256 there).
static Plan plan(const Shape &s, uint64_t per_block = 16384, uint64_t max_chunks = 256) {
    Plan p;
    p.n = s.n;
    p.c = s.c;
    p.hw = (uint64_t)s.side * s.side;
    p.groups = 32;
    uint64_t px = per_block / p.c;
    if (px < 1) px = 1;
    uint64_t need = (p.hw + max_chunks - 1) / max_chunks;
    if (px < need) px = need;
    p.chunk_px = px;
    p.chunks = (p.hw + px - 1) / px;
    uint64_t nv = p.c / 8;
    if (nv < 1) nv = 1;
    uint64_t lanes = nv < (uint64_t)THREADS ? nv : THREADS;
    p.shared = (THREADS / lanes) * p.c * 2 * sizeof(float);
    return p;
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 200;
    std::vector<Shape> shapes = {
        {2, 320, 64},   {2, 640, 64},   {2, 960, 64},   {2, 640, 32},    {2, 960, 32},    {2, 1920, 32},
        {2, 1280, 16},  {2, 2560, 16},  {16, 320, 64},  {16, 640, 64},   {16, 960, 64},   {16, 640, 32},
        {16, 960, 32},  {16, 1920, 32}, {16, 1280, 16}, {16, 2560, 16},  {1, 512, 64},    {1, 512, 128},
        {1, 512, 256},  {1, 256, 512},  {1, 128, 512},
    };
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("| shape | MB in | partial sums µs | finalize µs | apply µs | the three, graph µs | GB/s (3 passes) | "
           "warp reduce, graph µs | 8K-element chunks, graph µs | both, graph µs | both: max abs diff |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (const Shape &s : shapes) {
        Plan p = plan(s), q = plan(s, 8192, 512);
        size_t elems = p.n * p.hw * p.c;
        std::vector<__half> hx(elems), hg(p.c), hb(p.c);
        uint32_t seed = 12345;
        auto rnd = [&]() {
            seed = seed * 1664525u + 1013904223u;
            return ((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
        };
        for (auto &v : hx) v = __float2half(rnd() * 2.0f + 0.5f);
        for (auto &v : hg) v = __float2half(1.0f + 0.2f * rnd());
        for (auto &v : hb) v = __float2half(0.2f * rnd());
        __half *x, *g, *b, *y, *y2;
        float *partial;
        CK(cudaMalloc(&x, elems * 2));
        CK(cudaMalloc(&y, elems * 2));
        CK(cudaMalloc(&y2, elems * 2));
        CK(cudaMalloc(&g, p.c * 2));
        CK(cudaMalloc(&b, p.c * 2));
        uint64_t most = p.chunks > q.chunks ? p.chunks : q.chunks;
        CK(cudaMalloc(&partial, p.n * p.groups * most * 2 * sizeof(float)));
        CK(cudaMemcpy(x, hx.data(), elems * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(g, hg.data(), p.c * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(b, hb.data(), p.c * 2, cudaMemcpyHostToDevice));
        uint64_t img = p.c * p.hw;
        float eps = 1e-5f;
        int act = 1;
        dim3 pgrid((unsigned)p.chunks, (unsigned)p.n);
        unsigned ax = (unsigned)((img + THREADS * 8 - 1) / (THREADS * 8));
        if (ax > 65536) ax = 65536;
        dim3 agrid(ax, (unsigned)p.n);
        float *ss;
        CK(cudaMalloc(&ss, p.n * p.c * 2 * sizeof(float)));
        uint64_t gt = p.n * p.groups;
        dim3 fgrid((unsigned)((gt * 32 + THREADS - 1) / THREADS));
        dim3 qgrid((unsigned)q.chunks, (unsigned)q.n);
        auto partial_sums = [&]() {
            gn_partial_nhwc_f16<<<pgrid, THREADS, p.shared, st>>>(x, partial, p.hw, p.c, p.groups, p.chunk_px);
        };
        auto finalize_of = [&](uint64_t chunks) {
            gn_finalize_nhwc_f16<<<fgrid, THREADS, 0, st>>>(x, partial, ss, g, b, gt, chunks, p.hw, p.c, p.groups,
                                                            eps);
        };
        auto finalize = [&]() { finalize_of(p.chunks); };
        auto apply_to = [&](__half *out) {
            gn_apply_nhwc_f16<<<agrid, THREADS, 0, st>>>(x, ss, out, p.n, img, p.c, act);
        };
        auto apply = [&]() { apply_to(y); };
        // The candidates: the warp-per-group reduction, chunks of 8K elements (at most 512 an
        // image: twice the blocks, fewer idle SMs in the last wave), and both.
        auto warp_reduce = [&](const Plan &k, dim3 grid) {
            gn_partial_nhwc_warp_reduce<__half><<<grid, THREADS, k.shared, st>>>(x, partial, k.hw, k.c, k.groups,
                                                                                 k.chunk_px);
        };
        auto small_chunks = [&]() {
            gn_partial_nhwc_f16<<<qgrid, THREADS, q.shared, st>>>(x, partial, q.hw, q.c, q.groups, q.chunk_px);
        };
        auto time = [&](auto f) {
            for (int i = 0; i < 10; ++i) f();
            CK(cudaEventRecord(e0, st));
            for (int i = 0; i < iters; ++i) f();
            CK(cudaEventRecord(e1, st));
            CK(cudaEventSynchronize(e1));
            CK(cudaGetLastError());
            return ms_per(e0, e1, iters) * 1e3f;
        };
        auto graph_of = [&](auto f) {
            cudaGraph_t gr;
            cudaGraphExec_t ex;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
            f();
            CK(cudaStreamEndCapture(st, &gr));
            CK(cudaGraphInstantiate(&ex, gr, 0));
            float us = time([&]() { CK(cudaGraphLaunch(ex, st)); });
            CK(cudaGraphExecDestroy(ex));
            CK(cudaGraphDestroy(gr));
            return us;
        };
        float tp = time(partial_sums), tf = time(finalize), ta = time(apply);
        float t3 = graph_of([&]() {
            partial_sums();
            finalize();
            apply();
        });
        float tw = graph_of([&]() {
            warp_reduce(p, pgrid);
            finalize();
            apply();
        });
        float tc = graph_of([&]() {
            small_chunks();
            finalize_of(q.chunks);
            apply();
        });
        float tb = graph_of([&]() {
            warp_reduce(q, qgrid);
            finalize_of(q.chunks);
            apply();
        });
        std::vector<__half> o0(elems), o1(elems);
        partial_sums();
        finalize();
        apply_to(y);
        warp_reduce(q, qgrid);
        finalize_of(q.chunks);
        apply_to(y2);
        CK(cudaStreamSynchronize(st));
        CK(cudaGetLastError());
        CK(cudaMemcpy(o0.data(), y, elems * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(o1.data(), y2, elems * 2, cudaMemcpyDeviceToHost));
        float diff = 0.0f;
        for (size_t i = 0; i < elems; ++i) diff = fmaxf(diff, fabsf(__half2float(o0[i]) - __half2float(o1[i])));
        double mb = elems * 2.0 / 1e6;
        printf("| %d×%d×%d² | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.1f | %.1f | %.1e |\n", s.n, s.c, s.side,
               mb, tp, tf, ta, t3, 3.0 * mb / 1e3 / (t3 * 1e-6), tw, tc, tb, diff);
        CK(cudaFree(ss));
        CK(cudaFree(x));
        CK(cudaFree(y));
        CK(cudaFree(y2));
        CK(cudaFree(g));
        CK(cudaFree(b));
        CK(cudaFree(partial));
    }
    return 0;
}
