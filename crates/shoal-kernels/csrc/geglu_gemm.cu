// GEGLU with its projection in one GEMM: out[r, j] = (x·Wᵀ + b)[r, v(j)] · gelu_erf((x·Wᵀ + b)[r, g(j)]).
//
// A CUTLASS 3 GEMM for sm_90a (TMA loads, wgmma, warp-specialized, persistent) whose epilogue takes
// the place of the separate bias+GEGLU kernel: the projection's 2·inner columns never reach memory.
// The weight rows (and the bias) are interleaved by blocks of 8 when the layer is built
// (shoal-diffusion's `nn::geglu_interleave`): rows 16q..16q+8 of W' are value rows 8q..8q+8, rows
// 16q+8..16q+16 the gate rows of the same outputs. A wgmma accumulator gives each thread (lane t of
// its quad) the columns 8k + 2t + {0, 1} for every k, so the value of output (r, 8q + 2t + e) sits
// at k = 2q and its gate at k = 2q + 1 of the same thread: the epilogue pairs them in registers,
// adds the bias in f32 and packs the two outputs 8q + 2t, +1 into one word; the quad's four lanes
// then transpose their words of four blocks (two rounds of shuffles), so that each lane stores
// eight consecutive outputs as one 16-byte write. Each sum is the f32 accumulator plus the bias,
// rounded once at the output (the two-kernel form rounds the GEMM's output to T first).
//
// Host entry points `shoal_geglu_gemm_{f16,bf16}` (C ABI, for shoal-kernels' FFI) launch on the
// caller's stream through the CUDA runtime (linked statically; it works in the driver context
// that is current, candle's primary one).
#include <cuda_runtime.h>

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/collective/detail.hpp>
#include <cutlass/epilogue/thread/linear_combination.h>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

namespace shoal_geglu {
using namespace cute;

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

// erf by Abramowitz and Stegun 7.1.26 (absolute error at most 1.5e-7, about an f32 ulp of erf's
// values near 1; erff's is ~1e-7): one reciprocal and one exponential, no branch, about half
// of erff's instructions. The GEMM's epilogue runs while the tensor cores wait, so its
// arithmetic is the kernel's cost above the GEMM's (docs/KERNELS.md).
__device__ __forceinline__ float erf_as(float x) {
    float a = fabsf(x);
    float t = __fdividef(1.0f, fmaf(0.3275911f, a, 1.0f));
    float y = t * fmaf(t, fmaf(t, fmaf(t, fmaf(t, 1.061405429f, -1.453152027f), 1.421413741f), -0.284496736f),
                       0.254829592f);
    return copysignf(fmaf(-y, __expf(-a * a), 1.0f), x);
}
template <bool FAST> __device__ __forceinline__ float gelu(float x) {
    if constexpr (FAST) {
        return 0.5f * x * (1.0f + erf_as(x * 0.70710678118654752f));
    } else {
        return gelu_erf(x);
    }
}

template <class T> struct Pack2;
template <> struct Pack2<cutlass::half_t> {
    __device__ static uint32_t pack(float a, float b) {
        __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    __device__ static float2 unpack(uint32_t u) { return __half22float2(*reinterpret_cast<__half2 *>(&u)); }
};
template <> struct Pack2<cutlass::bfloat16_t> {
    __device__ static uint32_t pack(float a, float b) {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    __device__ static float2 unpack(uint32_t u) {
        return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u));
    }
};

// The epilogue (the interface of CUTLASS's DefaultEpilogue, run through its warp-specialized
// adapter): no shared memory, the outputs written from registers.
template <class T, bool FAST> class GegluEpilogue {
  public:
    using ElementC = T;
    using ElementD = T;
    using ElementOutput = T;
    using ElementAccumulator = float;
    using ElementCompute = float;
    using StrideC = cute::Stride<int64_t, cute::Int<1>, int64_t>;
    using StrideD = StrideC;
    using GmemTiledCopyC = void;
    using GmemTiledCopyD = void;
    // Named by CUTLASS's device adapter; not run (the epilogue below does the work).
    using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<T, 1, float, float>;
    struct SharedStorage {};
    using TensorStorage = SharedStorage;

    struct Arguments {
        T const *bias = nullptr; // (N,) interleaved as W's rows
        T *out = nullptr;        // (M, N / 2) row-major
        int64_t ld_out = 0;
    };
    using Params = Arguments;

    template <class ProblemShape>
    static constexpr Params to_underlying_arguments(ProblemShape const &, Arguments const &args, void *) {
        return args;
    }
    template <class ProblemShape> static size_t get_workspace_size(ProblemShape const &, Arguments const &) {
        return 0;
    }
    template <class ProblemShape>
    static cutlass::Status initialize_workspace(ProblemShape const &, Arguments const &, void *, cudaStream_t,
                                                cutlass::CudaHostAdapter * = nullptr) {
        return cutlass::Status::kSuccess;
    }
    template <class ProblemShape> static bool can_implement(ProblemShape const &shape, Arguments const &args) {
        auto n = get<1>(shape);
        return n % 64 == 0 && args.ld_out >= n / 2 && args.ld_out % 8 == 0 && args.bias && args.out;
    }

    CUTLASS_HOST_DEVICE GegluEpilogue(Params const &p, SharedStorage const & = SharedStorage()) : params(p) {}
    CUTLASS_DEVICE bool is_source_needed() { return false; }

    template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
              class TiledMma, class ResidueMNK>
    CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem_shape_mnkl, BlockShapeMNK blk_shape_MNK,
                                   BlockCoordMNKL blk_coord_mnkl, cute::Tensor<FrgEngine, FrgLayout> const &acc,
                                   TiledMma tiled_mma, ResidueMNK, int thread_idx, char *) {
        auto M = get<0>(problem_shape_mnkl);
        auto N = get<1>(problem_shape_mnkl);
        auto m_coord = get<0>(blk_coord_mnkl);
        auto n_coord = get<1>(blk_coord_mnkl);
        Tensor cD = local_tile(make_identity_tensor(make_shape(M, N)), take<0, 2>(blk_shape_MNK),
                               make_coord(m_coord, n_coord));
        auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
        Tensor tCcD = thr_mma.partition_C(cD); // ((2, 2, N/8), MMA_M, MMA_N), as acc
        static_assert(rank<0>(FrgLayout{}) == 3, "a wgmma accumulator: ((2, 2, N/8), MMA_M, MMA_N)");
        constexpr int E = size<0, 0>(FrgLayout{});
        constexpr int R = size<0, 1>(FrgLayout{});
        constexpr int K8 = size<0, 2>(FrgLayout{});
        static_assert(E == 2 && K8 % 2 == 0, "value/gate blocks of 8 columns");
        static_assert((K8 / 2) % 4 == 0, "tiles of whole groups of four output blocks");
        const uint32_t *bias = reinterpret_cast<const uint32_t *>(params.bias);
        const int t = threadIdx.x & 3; // the lane within its quad: the quad shares a row
        CUTLASS_PRAGMA_UNROLL
        for (int mm = 0; mm < size<1>(acc); ++mm) {
            CUTLASS_PRAGMA_UNROLL
            for (int nn = 0; nn < size<2>(acc); ++nn) {
                CUTLASS_PRAGMA_UNROLL
                for (int k0 = 0; k0 < K8; k0 += 8) {
                    // Four output blocks q0..q0+3 (accumulator blocks k0..k0+7): each lane forms its
                    // pair (outputs 8q + 2t, +1) of every block, for both row halves.
                    int col0 = get<1>(tCcD(make_coord(make_coord(0, 0, k0), mm, nn)));
                    if (col0 >= N) continue; // N % 64 == 0: a group is wholly in or out
                    uint32_t w[R][4];
                    CUTLASS_PRAGMA_UNROLL
                    for (int j = 0; j < 4; ++j) {
                        const int k = k0 + 2 * j;
                        int col = get<1>(tCcD(make_coord(make_coord(0, 0, k), mm, nn)));
                        float2 bv = Pack2<T>::unpack(__ldg(bias + col / 2));
                        float2 bg = Pack2<T>::unpack(__ldg(bias + col / 2 + 4));
                        CUTLASS_PRAGMA_UNROLL
                        for (int r = 0; r < R; ++r) {
                            float v0 = acc(make_coord(make_coord(0, r, k), mm, nn)) + bv.x;
                            float v1 = acc(make_coord(make_coord(1, r, k), mm, nn)) + bv.y;
                            float g0 = acc(make_coord(make_coord(0, r, k + 1), mm, nn)) + bg.x;
                            float g1 = acc(make_coord(make_coord(1, r, k + 1), mm, nn)) + bg.y;
                            w[r][j] = Pack2<T>::pack(v0 * gelu<FAST>(g0), v1 * gelu<FAST>(g1));
                        }
                    }
                    // Transpose the quad's 4 × 4 words: lane t ends with block q0 + t's four pairs,
                    // from lanes 0..3 in order: eight consecutive outputs, one 16-byte store.
                    CUTLASS_PRAGMA_UNROLL
                    for (int r = 0; r < R; ++r) {
                        CUTLASS_PRAGMA_UNROLL
                        for (int p = 0; p < 4; p += 2) {
                            uint32_t send = (t & 1) ? w[r][p] : w[r][p + 1];
                            uint32_t recv = __shfl_xor_sync(0xffffffffu, send, 1);
                            if (t & 1) w[r][p] = recv; else w[r][p + 1] = recv;
                        }
                        CUTLASS_PRAGMA_UNROLL
                        for (int e = 0; e < 2; ++e) {
                            uint32_t send = (t & 2) ? w[r][e] : w[r][e + 2];
                            uint32_t recv = __shfl_xor_sync(0xffffffffu, send, 2);
                            if (t & 2) w[r][e] = recv; else w[r][e + 2] = recv;
                        }
                        int row = get<0>(tCcD(make_coord(make_coord(0, r, k0), mm, nn)));
                        if (row >= M) continue;
                        // Block q0 + t of this tile: its first output column.
                        int ocol = (col0 >> 4) * 8 + 8 * t;
                        uint4 v = make_uint4(w[r][0], w[r][1], w[r][2], w[r][3]);
                        *reinterpret_cast<uint4 *>(params.out + (int64_t)row * params.ld_out + ocol) = v;
                    }
                }
            }
        }
    }

  private:
    Params params;
};

// One GEMM configuration: A = x (M, K) row-major, B = W' (N, K) row-major (K-major: "TN").
template <class T, class TileShape, class ClusterShape, class Schedule, bool FAST = true> struct Config {
    using Epi = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<GegluEpilogue<T, FAST>>;
    using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
        cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, cutlass::layout::RowMajor, 8, T,
        cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
        cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epi::SharedStorage))>,
        Schedule>::CollectiveOp;
    using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epi>;
    using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;

inline int sm_count() {
    static const int n = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
    return n;
}

// What went wrong in this thread's last call, for the caller's message.
inline const char *&last_error() {
    static thread_local const char *e = "no error";
    return e;
}

// 0 on success; 1 the shape or alignment is not covered; 2 a CUDA error (last_error says).
template <class Cfg, class T>
int run(const void *x, const void *w, const void *bias, void *out, int64_t m, int64_t n, int64_t k,
        cudaStream_t stream) {
    using Gemm = typename Cfg::Gemm;
    using StrideA = typename Gemm::GemmKernel::StrideA;
    using StrideB = typename Gemm::GemmKernel::StrideB;
    if (m <= 0 || n <= 0 || k <= 0 || n % 64 != 0 || k % 8 != 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX) {
        last_error() = "shape not covered (n a multiple of 64, k of 8, each under 2^31)";
        return 1;
    }
    if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w)) % 16 != 0 ||
        reinterpret_cast<uintptr_t>(bias) % 4 != 0 || reinterpret_cast<uintptr_t>(out) % 16 != 0) {
        last_error() = "a buffer is not aligned (x, w and out to 16 bytes, the bias to 4)";
        return 1;
    }
    StrideA sa = make_stride(k, Int<1>{}, m * k);
    StrideB sb = make_stride(k, Int<1>{}, n * k);
    cutlass::KernelHardwareInfo hw;
    cudaGetDevice(&hw.device_id);
    hw.sm_count = sm_count();
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {(int)m, (int)n, (int)k, 1},
                                  {static_cast<const T *>(x), sa, static_cast<const T *>(w), sb},
                                  {static_cast<const T *>(bias), static_cast<T *>(out), n / 2},
                                  hw};
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess || Gemm::get_workspace_size(args) != 0) {
        last_error() = "CUTLASS cannot implement this GEMM";
        return 1;
    }
    if (gemm.initialize(args, nullptr, stream) != cutlass::Status::kSuccess ||
        gemm.run(stream) != cutlass::Status::kSuccess) {
        cudaError_t e = cudaGetLastError();
        last_error() = e != cudaSuccess ? cudaGetErrorString(e) : "CUTLASS's initialize or run failed";
        return 2;
    }
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        last_error() = cudaGetErrorString(e);
        return 2;
    }
    return 0;
}

// The configurations the binary runs (scripts/gpu/geglu-bench.sh times them beside others; the
// table is in docs/KERNELS.md): 256×128 tiles, two warpgroups on each (cooperative), where they fill
// the GPU at least 2.5 times over; below that 64×128 tiles, one warpgroup each (ping-pong: one's
// epilogue runs while the other's GEMM does), for more and smaller tiles.
template <class T> using Large = Config<T, Shape<_256, _128, _64>, Shape<_1, _1, _1>, Coop>;
template <class T> using Small = Config<T, Shape<_64, _128, _64>, Shape<_1, _1, _1>, Pingpong>;

inline bool use_large(int64_t m, int64_t n) {
    int64_t tiles = ((m + 255) / 256) * ((n + 127) / 128);
    return tiles * 2 >= (int64_t)sm_count() * 5;
}

template <class T>
int run_default(const void *x, const void *w, const void *bias, void *out, int64_t m, int64_t n, int64_t k,
                cudaStream_t stream) {
    return use_large(m, n) ? run<Large<T>, T>(x, w, bias, out, m, n, k, stream)
                           : run<Small<T>, T>(x, w, bias, out, m, n, k, stream);
}

} // namespace shoal_geglu

extern "C" int shoal_geglu_gemm_f16(const void *x, const void *w, const void *bias, void *out, int64_t m, int64_t n,
                                    int64_t k, void *stream) {
    return shoal_geglu::run_default<cutlass::half_t>(x, w, bias, out, m, n, k, static_cast<cudaStream_t>(stream));
}

extern "C" int shoal_geglu_gemm_bf16(const void *x, const void *w, const void *bias, void *out, int64_t m, int64_t n,
                                     int64_t k, void *stream) {
    return shoal_geglu::run_default<cutlass::bfloat16_t>(x, w, bias, out, m, n, k,
                                                         static_cast<cudaStream_t>(stream));
}

// 1 when the current device runs this file's sm_90a code (compute capability 9.0), else 0.
extern "C" int shoal_geglu_supported() {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return 0;
    if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) return 0;
    return major == 9 && minor == 0;
}

// This thread's last failure, for the caller's message (a static string).
extern "C" const char *shoal_geglu_error() { return shoal_geglu::last_error(); }
