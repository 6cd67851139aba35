// Where the channels-last GroupNorm's time goes, kernel by kernel, on the shapes the models run
// (sd15 at 512², batch 2 and 16 with guidance; the VAE's decode of one image). A benchmark,
// not a test: it prints a table.
//
// Built by scripts/gpu/gn-bench.sh (nvcc, sm_90, the CUDA runtime linked statically); it
// includes csrc/fused.cu, so the kernels timed here are the ones the binary loads. Each time is
// the mean of `iters` launches (or CUDA graph replays, as the UNet's captured call runs them)
// after a warm-up, by CUDA events: the partial sums, the finalize (per-channel scale and shift),
// the apply (+SiLU), and the three as one graph.
#include "../csrc/fused.cu"

#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                                    \
    do {                                                                                         \
        cudaError_t e_ = (x);                                                                    \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

struct Shape {
    int n, c, side;
};

static const int THREADS = 256;

struct Plan {
    uint64_t n, c, hw, groups, chunks, chunk_px;
    size_t shared;
};

// The host's launch arithmetic of shoal-kernels' GroupNormOp::stats (fused.rs).
static Plan plan(const Shape &s) {
    Plan p;
    p.n = s.n;
    p.c = s.c;
    p.hw = (uint64_t)s.side * s.side;
    p.groups = 32;
    uint64_t px = 16384 / p.c;
    if (px < 1) px = 1;
    uint64_t need = (p.hw + 255) / 256;
    if (px < need) px = need;
    p.chunk_px = px;
    p.chunks = (p.hw + px - 1) / px;
    uint64_t nv = p.c / 8;
    if (nv < 1) nv = 1;
    uint64_t lanes = nv < (uint64_t)THREADS ? nv : THREADS;
    p.shared = (THREADS / lanes) * p.c * 2 * sizeof(float);
    return p;
}

static float ms_per(cudaEvent_t a, cudaEvent_t b, int iters) {
    float ms = 0.0f;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms / iters;
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
    printf("| shape | MB in | partial sums µs | finalize µs | apply µs | the three, graph µs | GB/s (3 passes) |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (const Shape &s : shapes) {
        Plan p = plan(s);
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
        __half *x, *g, *b, *y;
        float *partial;
        CK(cudaMalloc(&x, elems * 2));
        CK(cudaMalloc(&y, elems * 2));
        CK(cudaMalloc(&g, p.c * 2));
        CK(cudaMalloc(&b, p.c * 2));
        CK(cudaMalloc(&partial, p.n * p.groups * p.chunks * 2 * sizeof(float)));
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
        auto partial_sums = [&]() {
            gn_partial_nhwc_f16<<<pgrid, THREADS, p.shared, st>>>(x, partial, p.hw, p.c, p.groups, p.chunk_px);
        };
        auto finalize = [&]() {
            gn_finalize_nhwc_f16<<<fgrid, THREADS, 0, st>>>(x, partial, ss, g, b, gt, p.chunks, p.hw, p.c, p.groups,
                                                            eps);
        };
        auto apply = [&]() { gn_apply_nhwc_f16<<<agrid, THREADS, 0, st>>>(x, ss, y, p.n, img, p.c, act); };
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
        double mb = elems * 2.0 / 1e6;
        printf("| %d×%d×%d² | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f |\n", s.n, s.c, s.side, mb, tp, tf, ta, t3,
               3.0 * mb / 1e3 / (t3 * 1e-6));
        CK(cudaFree(ss));
        CK(cudaFree(x));
        CK(cudaFree(y));
        CK(cudaFree(g));
        CK(cudaFree(b));
        CK(cudaFree(partial));
    }
    return 0;
}
