// shoal's fused elementwise kernels (feature `fused`), compiled to PTX by build.rs with nvcc
// and loaded through candle's custom-module cache. Each kernel exists for f16, bf16 and f32
// (suffixes _f16, _bf16, _f32); arithmetic is in f32.
//
// GroupNorm on contiguous NCHW (NHWC below): one group of one image is the contiguous run of
// (C / G) * H * W elements starting at (n * G + g) * group_len. Three launches:
//   gn_partial  — each block sums (x - pivot) and (x - pivot)^2 over a chunk of a group,
//                 pivot = the group's first element (guards against cancellation);
//   gn_finalize — one warp per group: mean and 1 / sqrt(var + eps);
//   gn_apply    — y = (x - mean) * rstd * gamma[c] + beta[c], then SiLU if asked (row-wise, below).
#include <cuda.h> // CUtensorMap
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include <type_traits>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float silu(float x) { return x / (1.0f + __expf(-x)); }
__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

// 16-byte vectors: V<T>::N elements of T per load or store.
template <typename T> struct V {
    static constexpr int N = 16 / sizeof(T);
    union U {
        uint4 raw;
        T e[N];
    };
    __device__ __forceinline__ static U load(const T *p) { U u; u.raw = *reinterpret_cast<const uint4 *>(p); return u; }
    __device__ __forceinline__ static void store(T *p, const U &u) { *reinterpret_cast<uint4 *>(p) = u.raw; }
};
__device__ __forceinline__ bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Block-wide sum of two floats (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ void block_sum2(float &a, float &b) {
    __shared__ float sa[32], sb[32];
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffff, a, o);
        b += __shfl_xor_sync(0xffffffff, b, o);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sa[warp] = a; sb[warp] = b; }
    __syncthreads();
    int nw = blockDim.x >> 5;
    a = lane < nw ? sa[lane] : 0.0f;
    b = lane < nw ? sb[lane] : 0.0f;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) {
            a += __shfl_xor_sync(0xffffffff, a, o);
            b += __shfl_xor_sync(0xffffffff, b, o);
        }
    }
}

// grid (chunks, groups_total); partial[(group * chunks + chunk) * 2 + {0,1}]
template <typename T>
__device__ void gn_partial(const T *x, float *partial, uint64_t group_len, uint64_t chunk_len) {
    constexpr int N = V<T>::N;
    uint64_t group = blockIdx.y, chunk = blockIdx.x;
    const T *g = x + group * group_len;
    float pivot = to_f(g[0]);
    uint64_t lo = chunk * chunk_len;
    uint64_t hi = lo + chunk_len < group_len ? lo + chunk_len : group_len;
    float s1 = 0.0f, s2 = 0.0f;
    if (lo % N == 0 && hi % N == 0 && aligned16(g)) {
        for (uint64_t i = lo + threadIdx.x * N; i < hi; i += blockDim.x * N) {
            typename V<T>::U u = V<T>::load(g + i);
#pragma unroll
            for (int k = 0; k < N; ++k) {
                float v = to_f(u.e[k]) - pivot;
                s1 += v;
                s2 += v * v;
            }
        }
    } else {
        for (uint64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            float v = to_f(g[i]) - pivot;
            s1 += v;
            s2 += v * v;
        }
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
        partial[(group * gridDim.x + chunk) * 2] = s1;
        partial[(group * gridDim.x + chunk) * 2 + 1] = s2;
    }
}

// The statistics of one group from its chunks' partial sums, by one whole warp (`lane` its
// lane): the lanes sum strided chunks in f64 (a group may have thousands of chunks; one thread
// walking them serially was latency-bound), then a butterfly shuffle leaves the sums on every
// lane, so every lane returns the group's (mean, 1 / sqrt(var + eps)). The pivot of group
// (b * G + g) is x[b * img_stride + g * pivot_stride] (its first element in either layout).
template <typename T>
__device__ __forceinline__ float2 gn_group_stats(const T *x, const float *partial, uint64_t group, unsigned lane,
                                                 uint64_t chunks, uint64_t group_len, float eps, uint64_t groups,
                                                 uint64_t img_stride, uint64_t pivot_stride) {
    double s1 = 0.0, s2 = 0.0;
    for (uint64_t c = lane; c < chunks; c += 32) {
        s1 += partial[(group * chunks + c) * 2];
        s2 += partial[(group * chunks + c) * 2 + 1];
    }
    for (int o = 16; o > 0; o >>= 1) {
        s1 += __shfl_xor_sync(0xffffffff, s1, o);
        s2 += __shfl_xor_sync(0xffffffff, s2, o);
    }
    double n = (double)group_len;
    double m = s1 / n;
    double var = s2 / n - m * m;
    if (var < 0.0) var = 0.0;
    float pivot = to_f(x[(group / groups) * img_stride + (group % groups) * pivot_stride]);
    return make_float2((float)(m + (double)pivot), (float)(1.0 / sqrt(var + (double)eps)));
}

// NCHW: stats[group * 2] = mean, stats[group * 2 + 1] = rstd, one warp per group.
template <typename T>
__device__ void gn_finalize(const T *x, const float *partial, float *stats, uint64_t groups_total, uint64_t chunks,
                            uint64_t group_len, float eps, uint64_t groups, uint64_t img_stride,
                            uint64_t pivot_stride) {
    uint64_t group = (blockIdx.x * (uint64_t)blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x & 31;
    if (group >= groups_total) return;  // whole warps leave together (blockDim % 32 == 0)
    float2 st = gn_group_stats(x, partial, group, lane, chunks, group_len, eps, groups, img_stride, pivot_stride);
    if (lane != 0) return;
    stats[group * 2] = st.x;
    stats[group * 2 + 1] = st.y;
}

// Channels-last: one warp per group (b, g) takes its statistics as gn_finalize, then its lanes
// write the group's channels' scale = rstd * gamma and shift = beta - mean * scale to
// ss[(b * c + ch) * 2 + {0, 1}]. The apply computes y = x * scale + shift: the same arithmetic
// (and bits) as forming them per element.
template <typename T>
__device__ void gn_finalize_nhwc(const T *x, const float *partial, float *ss, const T *gamma, const T *beta,
                                 uint64_t groups_total, uint64_t chunks, uint64_t hw, uint64_t c, uint64_t groups,
                                 float eps) {
    uint64_t group = (blockIdx.x * (uint64_t)blockDim.x + threadIdx.x) / 32;
    unsigned lane = threadIdx.x & 31;
    if (group >= groups_total) return;  // whole warps leave together (blockDim % 32 == 0)
    uint64_t cpg = c / groups;
    float2 st = gn_group_stats(x, partial, group, lane, chunks, cpg * hw, eps, groups, hw * c, cpg);
    uint64_t b = group / groups, g = group % groups;
    for (uint64_t ch = g * cpg + lane; ch < (g + 1) * cpg; ch += 32) {
        float scale = st.y * to_f(gamma[ch]);
        ss[(b * c + ch) * 2] = scale;
        ss[(b * c + ch) * 2 + 1] = to_f(beta[ch]) - st.x * scale;
    }
}

// GroupNorm on contiguous NHWC (n, hw, c): grid (chunks, n), each block sums one chunk of
// `chunk_px` pixels of one image, all channels. Lanes own 16-byte channel vectors, rows of
// lanes walk the pixels; each (row, channel) sum goes to its own slot of shared memory
// (rows * c * 2 floats), then one thread per group adds its slots in a fixed order, so the
// result has the same bits on every call (the sums take no atomics).
// partial has the NCHW layout: partial[((b * groups + g) * chunks + chunk) * 2 + {0,1}].
// gn_finalize_nhwc then turns them into per-channel scale and shift for gn_apply_nhwc.
// The host guarantees c % N == 0, 16-byte alignment and the shared memory size.
// WARP_REDUCE (a candidate timed by bench/gn_nhwc.cu, not in the binary): a warp per group adds
// the slots instead of one thread (another fixed order: the same bits on every call, not these).
template <typename T, bool WARP_REDUCE = false>
__device__ void gn_partial_nhwc(const T *x, float *partial, uint64_t hw, uint64_t c, uint64_t groups,
                                uint64_t chunk_px) {
    constexpr int N = V<T>::N;
    extern __shared__ float red[];
    uint64_t b = blockIdx.y, chunk = blockIdx.x, chunks = gridDim.x;
    const T *xb = x + b * hw * c;
    uint64_t cpg = c / groups;
    uint64_t p0 = chunk * chunk_px;
    uint64_t p1 = p0 + chunk_px < hw ? p0 + chunk_px : hw;
    uint64_t nv = c / N;
    uint64_t lanes = nv < blockDim.x ? nv : blockDim.x;
    uint64_t rows = blockDim.x / lanes;
    uint64_t lane = threadIdx.x % lanes, row = threadIdx.x / lanes;
    if (row < rows) {
        for (uint64_t v = lane; v < nv; v += lanes) {
            float piv[N], s1[N], s2[N];
#pragma unroll
            for (int k = 0; k < N; ++k) {
                uint64_t ch = v * N + k;
                piv[k] = to_f(xb[(ch / cpg) * cpg]);
                s1[k] = 0.0f;
                s2[k] = 0.0f;
            }
#pragma unroll 4
            for (uint64_t p = p0 + row; p < p1; p += rows) {
                typename V<T>::U u = V<T>::load(xb + p * c + v * N);
#pragma unroll
                for (int k = 0; k < N; ++k) {
                    float f = to_f(u.e[k]) - piv[k];
                    s1[k] += f;
                    s2[k] += f * f;
                }
            }
#pragma unroll
            for (int k = 0; k < N; ++k) {
                uint64_t slot = (row * c + v * N + k) * 2;
                red[slot] = s1[k];
                red[slot + 1] = s2[k];
            }
        }
    }
    __syncthreads();
    if (WARP_REDUCE) {
        unsigned warp = threadIdx.x / 32, wl = threadIdx.x % 32, warps = blockDim.x / 32;
        for (uint64_t g = warp; g < groups; g += warps) {
            float a1 = 0.0f, a2 = 0.0f;
            for (uint64_t sl = wl; sl < rows * cpg; sl += 32) {
                uint64_t r = sl / cpg, ch = g * cpg + sl % cpg;
                a1 += red[(r * c + ch) * 2];
                a2 += red[(r * c + ch) * 2 + 1];
            }
            for (int o = 16; o > 0; o >>= 1) {
                a1 += __shfl_xor_sync(0xffffffff, a1, o);
                a2 += __shfl_xor_sync(0xffffffff, a2, o);
            }
            if (wl == 0) {
                partial[((b * groups + g) * chunks + chunk) * 2] = a1;
                partial[((b * groups + g) * chunks + chunk) * 2 + 1] = a2;
            }
        }
        return;
    }
    for (uint64_t g = threadIdx.x; g < groups; g += blockDim.x) {
        float a1 = 0.0f, a2 = 0.0f;
        for (uint64_t r = 0; r < rows; ++r) {
            for (uint64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch) {
                a1 += red[(r * c + ch) * 2];
                a2 += red[(r * c + ch) * 2 + 1];
            }
        }
        partial[((b * groups + g) * chunks + chunk) * 2] = a1;
        partial[((b * groups + g) * chunks + chunk) * 2 + 1] = a2;
    }
}

// GroupNorm (+SiLU) on contiguous NHWC in one launch: grid (groups, n), a block per group of
// one image. The block's threads take the group's cpg * hw elements in order (pixel j / cpg,
// channel g * cpg + j % cpg): they sum (x - pivot) and its square (pivot = the group's first
// element), a fixed-order block reduction gives mean and 1 / sqrt(var + eps), and a second
// pass over the same elements (from L2 for the small groups this is for) writes y with the
// apply formula of gn_apply_nhwc. No atomics: the same bits on every call.
template <typename T>
__device__ void gn_one_pass_nhwc(const T *x, const T *gamma, const T *beta, T *y, uint64_t hw, uint64_t c,
                                 uint64_t groups, float eps, int act_silu) {
    __shared__ float st[2];
    uint32_t g = blockIdx.x;
    uint64_t b = blockIdx.y;
    uint32_t cpg = (uint32_t)(c / groups);
    uint32_t len = cpg * (uint32_t)hw;
    uint64_t base = b * hw * c + (uint64_t)g * cpg;
    const T *xb = x + base;
    T *yb = y + base;
    float pivot = to_f(xb[0]);
    float s1 = 0.0f, s2 = 0.0f;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
        uint32_t p = j / cpg, ch = j - p * cpg;
        float v = to_f(xb[(uint64_t)p * c + ch]) - pivot;
        s1 += v;
        s2 += v * v;
    }
    block_sum2(s1, s2);
    if (threadIdx.x == 0) {
        double n = (double)len;
        double m = (double)s1 / n;
        double var = (double)s2 / n - m * m;
        if (var < 0.0) var = 0.0;
        st[0] = (float)(m + (double)pivot);
        st[1] = (float)(1.0 / sqrt(var + (double)eps));
    }
    __syncthreads();
    float mean = st[0], rstd = st[1];
    const T *ga = gamma + (uint64_t)g * cpg;
    const T *be = beta + (uint64_t)g * cpg;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) {
        uint32_t p = j / cpg, ch = j - p * cpg;
        uint64_t at = (uint64_t)p * c + ch;
        float scale = rstd * to_f(ga[ch]);
        float v = to_f(xb[at]) * scale + (to_f(be[ch]) - mean * scale);
        if (act_silu) v = silu(v);
        yb[at] = from_f<T>(v);
    }
}

// GroupNorm apply on NHWC: rows are images of cols = hw * c elements; channel = j % c;
// y = x * scale + shift with image b's per-channel ss (gn_finalize_nhwc). 32-bit index
// arithmetic (the host checks cols < 2^31). N consecutive channels' (scale, shift) pairs are
// 2 * N floats, 16-byte aligned (c % N == 0).
template <typename T>
__device__ void gn_apply_nhwc(const T *x, const float *ss, T *y, uint64_t n, uint64_t cols64, uint64_t c64,
                              int act_silu) {
    constexpr int N = V<T>::N;
    uint32_t cols = (uint32_t)cols64, c = (uint32_t)c64;
    for (uint64_t b = blockIdx.y; b < n; b += gridDim.y) {
        const float4 *sb = reinterpret_cast<const float4 *>(ss + b * c64 * 2);
        const T *xr = x + b * cols64;
        T *yr = y + b * cols64;
        for (uint32_t j = (blockIdx.x * blockDim.x + threadIdx.x) * N; j < cols; j += gridDim.x * blockDim.x * N) {
            uint32_t ch = j % c;
            typename V<T>::U u = V<T>::load(xr + j);
            const float4 *s4 = sb + ch / 2;
#pragma unroll
            for (int k = 0; k < N; k += 2) {
                float4 t = s4[k / 2];
                float v0 = to_f(u.e[k]) * t.x + t.y;
                float v1 = to_f(u.e[k + 1]) * t.z + t.w;
                if (act_silu) {
                    v0 = silu(v0);
                    v1 = silu(v1);
                }
                u.e[k] = from_f<T>(v0);
                u.e[k + 1] = from_f<T>(v1);
            }
            V<T>::store(yr + j, u);
        }
    }
}

// In place on NHWC: y[b, j] += t[b, j % c] for rows b of cols = hw * c (the time embedding).
// The host guarantees c % N == 0 and 16-byte alignment.
template <typename T>
__device__ void add_bc(T *y, const T *t, uint64_t n, uint64_t cols64, uint64_t c64) {
    constexpr int N = V<T>::N;
    uint32_t cols = (uint32_t)cols64, c = (uint32_t)c64;
    for (uint64_t b = blockIdx.y; b < n; b += gridDim.y) {
        T *yr = y + b * cols64;
        const T *tr = t + b * c64;
        for (uint32_t j = (blockIdx.x * blockDim.x + threadIdx.x) * N; j < cols; j += gridDim.x * blockDim.x * N) {
            typename V<T>::U u = V<T>::load(yr + j), a = V<T>::load(tr + j % c);
#pragma unroll
            for (int k = 0; k < N; ++k) u.e[k] = from_f<T>(to_f(u.e[k]) + to_f(a.e[k]));
            V<T>::store(yr + j, u);
        }
    }
}

// Row-wise kernels: grid.x covers a row of `cols` elements, grid.y strides over the rows,
// so per-row values are loaded once per block and no element index is divided.

// GroupNorm apply. Rows are the (n, c) planes of hw elements; the planes of one group are
// consecutive, so group = plane / (channels / groups).
template <typename T>
__device__ void gn_apply(const T *x, const float *stats, const T *gamma, const T *beta, T *y, uint64_t planes,
                         uint64_t hw, uint64_t channels, uint64_t cpg, int act_silu) {
    constexpr int N = V<T>::N;
    bool vec = hw % N == 0 && aligned16(x) && aligned16(y);
    for (uint64_t p = blockIdx.y; p < planes; p += gridDim.y) {
        uint64_t c = p % channels, group = p / cpg;
        float scale = stats[group * 2 + 1] * to_f(gamma[c]);
        float shift = to_f(beta[c]) - stats[group * 2] * scale;
        const T *xr = x + p * hw;
        T *yr = y + p * hw;
        if (vec) {
            for (uint64_t j = (blockIdx.x * (uint64_t)blockDim.x + threadIdx.x) * N; j < hw;
                 j += (uint64_t)gridDim.x * blockDim.x * N) {
                typename V<T>::U u = V<T>::load(xr + j);
#pragma unroll
                for (int k = 0; k < N; ++k) {
                    float v = to_f(u.e[k]) * scale + shift;
                    if (act_silu) v = silu(v);
                    u.e[k] = from_f<T>(v);
                }
                V<T>::store(yr + j, u);
            }
        } else {
            for (uint64_t j = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; j < hw;
                 j += (uint64_t)gridDim.x * blockDim.x) {
                float v = to_f(xr[j]) * scale + shift;
                if (act_silu) v = silu(v);
                yr[j] = from_f<T>(v);
            }
        }
    }
}

// In place: y[r, j] += bias[j] for `rows` rows of `cols`.
template <typename T>
__device__ void add_row_bias(T *y, const T *bias, uint64_t rows, uint64_t cols) {
    constexpr int N = V<T>::N;
    bool vec = cols % N == 0 && aligned16(y) && aligned16(bias);
    for (uint64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        T *yr = y + r * cols;
        if (vec) {
            for (uint64_t j = (blockIdx.x * (uint64_t)blockDim.x + threadIdx.x) * N; j < cols;
                 j += (uint64_t)gridDim.x * blockDim.x * N) {
                typename V<T>::U u = V<T>::load(yr + j), b = V<T>::load(bias + j);
#pragma unroll
                for (int k = 0; k < N; ++k) u.e[k] = from_f<T>(to_f(u.e[k]) + to_f(b.e[k]));
                V<T>::store(yr + j, u);
            }
        } else {
            for (uint64_t j = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; j < cols;
                 j += (uint64_t)gridDim.x * blockDim.x) {
                yr[j] = from_f<T>(to_f(yr[j]) + to_f(bias[j]));
            }
        }
    }
}

// In place on NCHW: y[p, :] += t[p] for each (n, c) plane p of hw elements (the time embedding).
template <typename T>
__device__ void add_nc(T *y, const T *t, uint64_t planes, uint64_t hw) {
    for (uint64_t p = blockIdx.y; p < planes; p += gridDim.y) {
        float add = to_f(t[p]);
        T *yr = y + p * hw;
        for (uint64_t j = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; j < hw; j += (uint64_t)gridDim.x * blockDim.x) {
            yr[j] = from_f<T>(to_f(yr[j]) + add);
        }
    }
}

// GEGLU with the projection's bias: h (rows, 2 * inner) without bias, bias (2 * inner,);
// out[r, j] = (h[r, j] + b[j]) * gelu_erf(h[r, inner + j] + b[inner + j]).
template <typename T>
__device__ void bias_geglu(const T *h, const T *bias, T *out, uint64_t rows, uint64_t inner) {
    constexpr int N = V<T>::N;
    bool vec = inner % N == 0 && aligned16(h) && aligned16(out) && aligned16(bias);
    for (uint64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const T *hr = h + r * 2 * inner;
        T *orow = out + r * inner;
        if (vec) {
            for (uint64_t j = (blockIdx.x * (uint64_t)blockDim.x + threadIdx.x) * N; j < inner;
                 j += (uint64_t)gridDim.x * blockDim.x * N) {
                typename V<T>::U a = V<T>::load(hr + j), g = V<T>::load(hr + inner + j);
                typename V<T>::U ba = V<T>::load(bias + j), bg = V<T>::load(bias + inner + j);
#pragma unroll
                for (int k = 0; k < N; ++k) {
                    a.e[k] = from_f<T>((to_f(a.e[k]) + to_f(ba.e[k])) * gelu_erf(to_f(g.e[k]) + to_f(bg.e[k])));
                }
                V<T>::store(orow + j, a);
            }
        } else {
            for (uint64_t j = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; j < inner;
                 j += (uint64_t)gridDim.x * blockDim.x) {
                float a = to_f(hr[j]) + to_f(bias[j]);
                float g = to_f(hr[inner + j]) + to_f(bias[inner + j]);
                orow[j] = from_f<T>(a * gelu_erf(g));
            }
        }
    }
}

// LayerNorm over the last dimension (`cols`), one warp per row, the row held in registers
// (at most 32 * MAXV vectors): s = x, or x + r rounded to T exactly as a separate add
// would store it; y = (s - mean) * rstd * gamma + beta with the centred variance, in f32.
// gb packs gamma then beta (2 * cols). `sum` (null when there is no r) receives s.
template <typename T, int MAXV>
__device__ void layer_norm(const T *x, const T *r, const T *gb, T *sum, T *y, uint64_t rows, uint32_t cols,
                           float eps) {
    constexpr int N = V<T>::N;
    const int lane = threadIdx.x & 31;
    const uint64_t row = blockIdx.x * (uint64_t)(blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    const uint32_t nv = cols / N;
    const uint64_t base = row * cols;
    typename V<T>::U v[MAXV];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; ++i) {
        const uint32_t j = lane + i * 32;
        if (j < nv) {
            v[i] = V<T>::load(x + base + j * N);
            if (r != nullptr) {
                typename V<T>::U rv = V<T>::load(r + base + j * N);
#pragma unroll
                for (int k = 0; k < N; ++k) v[i].e[k] = from_f<T>(to_f(v[i].e[k]) + to_f(rv.e[k]));
            }
#pragma unroll
            for (int k = 0; k < N; ++k) s += to_f(v[i].e[k]);
        }
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffff, s, o);
    const float mean = s / (float)cols;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < MAXV; ++i) {
        const uint32_t j = lane + i * 32;
        if (j < nv) {
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float d = to_f(v[i].e[k]) - mean;
                q += d * d;
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) q += __shfl_xor_sync(0xffffffff, q, o);
    const float rstd = rsqrtf(q / (float)cols + eps);
#pragma unroll
    for (int i = 0; i < MAXV; ++i) {
        const uint32_t j = lane + i * 32;
        if (j < nv) {
            if (sum != nullptr) V<T>::store(sum + base + j * N, v[i]);
            typename V<T>::U g = V<T>::load(gb + j * N), b = V<T>::load(gb + cols + j * N), o;
#pragma unroll
            for (int k = 0; k < N; ++k) {
                o.e[k] = from_f<T>((to_f(v[i].e[k]) - mean) * rstd * to_f(g.e[k]) + to_f(b.e[k]));
            }
            V<T>::store(y + base + j * N, o);
        }
    }
}

#define LAYER_NORM(T, S, M)                                                                                        \
    extern "C" __global__ void layer_norm_##S##_##M(const T *x, const T *r, const T *gb, T *sum, T *y,            \
                                                    uint64_t rows, uint32_t cols, float eps) {                    \
        layer_norm<T, M>(x, r, gb, sum, y, rows, cols, eps);                                                       \
    }
#define LAYER_NORMS(T, S) LAYER_NORM(T, S, 2) LAYER_NORM(T, S, 4) LAYER_NORM(T, S, 8) LAYER_NORM(T, S, 16)

// Channels-last copies, in 16-byte vectors (every channel count a multiple of V<T>::N):
// upsample2x_nhwc — nearest 2x: each input vector is written to its four output pixels;
// cat_nhwc — out[p, :ca] = a[p], out[p, ca:] = b[p] for every pixel p.
template <typename T>
__device__ void upsample2x_nhwc(const T *x, T *y, uint64_t n, uint64_t h, uint64_t w, uint64_t cv) {
    constexpr int N = V<T>::N;
    const uint64_t total = n * h * w * cv;
    for (uint64_t v = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; v < total; v += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t c = v % cv, pix = v / cv;
        const uint64_t xi = pix % w, yi = (pix / w) % h, img = pix / (w * h);
        typename V<T>::U u = V<T>::load(x + v * N);
        const uint64_t row = (img * 2 * h + 2 * yi) * 2 * w + 2 * xi;
        const uint64_t stride = 2 * w;
        V<T>::store(y + ((row) * cv + c) * N, u);
        V<T>::store(y + ((row + 1) * cv + c) * N, u);
        V<T>::store(y + ((row + stride) * cv + c) * N, u);
        V<T>::store(y + ((row + stride + 1) * cv + c) * N, u);
    }
}

template <typename T>
__device__ void cat_nhwc(const T *a, const T *b, T *y, uint64_t pixels, uint64_t av, uint64_t bv) {
    constexpr int N = V<T>::N;
    const uint64_t ov = av + bv, total = pixels * ov;
    for (uint64_t v = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; v < total; v += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t p = v / ov, j = v % ov;
        const T *src = j < av ? a + (p * av + j) * N : b + (p * bv + (j - av)) * N;
        V<T>::store(y + v * N, V<T>::load(src));
    }
}

#define COPIES(T, S)                                                                                               \
    extern "C" __global__ void upsample2x_nhwc_##S(const T *x, T *y, uint64_t n, uint64_t h, uint64_t w,          \
                                                   uint64_t cv) {                                                  \
        upsample2x_nhwc<T>(x, y, n, h, w, cv);                                                                     \
    }                                                                                                              \
    extern "C" __global__ void cat_nhwc_##S(const T *a, const T *b, T *y, uint64_t pixels, uint64_t av,           \
                                            uint64_t bv) {                                                         \
        cat_nhwc<T>(a, b, y, pixels, av, bv);                                                                      \
    }

#define INSTANTIATE(T, S)                                                                                          \
    extern "C" __global__ void gn_partial_##S(const T *x, float *p, uint64_t gl, uint64_t cl) {                   \
        gn_partial<T>(x, p, gl, cl);                                                                               \
    }                                                                                                              \
    extern "C" __global__ void gn_finalize_##S(const T *x, const float *p, float *st, uint64_t g, uint64_t ch,    \
                                               uint64_t gl, float eps, uint64_t gpi, uint64_t is, uint64_t ps) {   \
        gn_finalize<T>(x, p, st, g, ch, gl, eps, gpi, is, ps);                                                     \
    }                                                                                                              \
    extern "C" __global__ void gn_partial_nhwc_##S(const T *x, float *p, uint64_t hw, uint64_t c, uint64_t g,      \
                                                   uint64_t cp) {                                                  \
        gn_partial_nhwc<T>(x, p, hw, c, g, cp);                                                                    \
    }                                                                                                              \
    extern "C" __global__ void gn_finalize_nhwc_##S(const T *x, const float *p, float *ss, const T *ga,           \
                                                    const T *be, uint64_t gt, uint64_t ch, uint64_t hw,            \
                                                    uint64_t c, uint64_t g, float eps) {                           \
        gn_finalize_nhwc<T>(x, p, ss, ga, be, gt, ch, hw, c, g, eps);                                              \
    }                                                                                                              \
    extern "C" __global__ void gn_apply_nhwc_##S(const T *x, const float *ss, T *y, uint64_t n, uint64_t cols,    \
                                                 uint64_t c, int act) {                                            \
        gn_apply_nhwc<T>(x, ss, y, n, cols, c, act);                                                               \
    }                                                                                                              \
    extern "C" __global__ void gn_apply_nhwc_inplace_##S(T *x, const float *ss, uint64_t n, uint64_t cols,        \
                                                         uint64_t c, int act) {                                    \
        gn_apply_nhwc<T>(x, ss, x, n, cols, c, act);                                                               \
    }                                                                                                              \
    extern "C" __global__ void gn_one_pass_nhwc_##S(const T *x, const T *ga, const T *be, T *y, uint64_t hw,      \
                                                    uint64_t c, uint64_t g, float eps, int act) {                  \
        gn_one_pass_nhwc<T>(x, ga, be, y, hw, c, g, eps, act);                                                     \
    }                                                                                                              \
    extern "C" __global__ void add_bc_##S(T *y, const T *t, uint64_t n, uint64_t cols, uint64_t c) {             \
        add_bc<T>(y, t, n, cols, c);                                                                               \
    }                                                                                                              \
    extern "C" __global__ void gn_apply_##S(const T *x, const float *st, const T *ga, const T *be, T *y,          \
                                            uint64_t planes, uint64_t hw, uint64_t c, uint64_t cpg, int act) {    \
        gn_apply<T>(x, st, ga, be, y, planes, hw, c, cpg, act);                                                    \
    }                                                                                                              \
    extern "C" __global__ void add_row_bias_##S(T *y, const T *b, uint64_t n, uint64_t cols) {                   \
        add_row_bias<T>(y, b, n, cols);                                                                            \
    }                                                                                                              \
    extern "C" __global__ void add_nc_##S(T *y, const T *t, uint64_t n, uint64_t hw) { add_nc<T>(y, t, n, hw); } \
    extern "C" __global__ void bias_geglu_##S(const T *h, const T *b, T *o, uint64_t rows, uint64_t inner) {      \
        bias_geglu<T>(h, b, o, rows, inner);                                                                       \
    }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
INSTANTIATE(__nv_bfloat16, bf16)
LAYER_NORMS(float, f32)
LAYER_NORMS(__half, f16)
LAYER_NORMS(__nv_bfloat16, bf16)
COPIES(float, f32)
COPIES(__half, f16)
COPIES(__nv_bfloat16, bf16)

// ---------------------------------------------------------------------------------------------
// Attention over few keys (cross-attention over the 77 text tokens), f16 and bf16:
// softmax(scale · q kᵀ) v per (image, head) with every key and value of the head in shared
// memory (keys padded with zeros to KP = 16·KT, head width to DP = D rounded up to 16), 16 query
// rows per warp: the scores as m16n8k16 tensor-core MMAs into f32, the whole row's softmax in
// registers (no running maximum: every key is in the tile), the probabilities rounded to T and
// multiplied by V as MMAs (their accumulator fragments are the MMA's A fragments), the sum of the
// f32 probabilities divided out at the end. q (b, sq, ·), k and v (b, skv, ·) are strided views
// (element strides per image and per row; head h at columns h·D..): 16-byte aligned rows, D a
// multiple of 8. o is (b, sq, heads·D), contiguous.
#define FEW_KEYS_WARPS 4

template <typename T> struct Mma;
template <> struct Mma<__half> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};
template <> struct Mma<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void *p) {
    uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// 2^x on the FMA and integer pipes instead of the special-function unit (FlashAttention-4's
// trick, for kernels whose exponentials queue on that unit): 2^⌊x⌋ into the exponent bits,
// 2^f (f = x − ⌊x⌋ in [0, 1)) by a degree-3 polynomial, relative error below 8.6e-5 (fitted
// minimax on [0, 1) with p(0) = 1). x ≥ −127 after the clamp (−inf gives 2^−127, under f16's
// and bf16's smallest values); x ≤ 128.
__device__ __forceinline__ float ex2_fma(float x) {
    x = fmaxf(x, -127.0f);
    const float t = __fadd_rd(x, 12582912.0f); // 1.5 · 2^23 + ⌊x⌋, exactly: ⌊x⌋ in the low bits
    const float f = x - (t - 12582912.0f);
    const float p = fmaf(fmaf(fmaf(0.07706602f, f, 0.22764611f), f, 0.69511652f), f, 1.0f);
    return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

// grid (⌈sq / (64·tiles)⌉, heads, b), block 32·FEW_KEYS_WARPS: each warp takes `tiles` tiles of 16 rows.
// The keys and values in shared memory, 2 · 16·KT · (DP + 8) elements: static up to 48 KB, dynamic past
// that (attention.rs `few_keys_smem`; width 160 needs 53.8 KB). The product with
// the values runs in OC column chunks of the output (width 160: two of 80, so that its f32
// accumulators and the next tile's q fit the registers together).
template <typename T, int D, int KT, int OC>
__device__ void attn_few_keys(const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                              T *__restrict__ o, uint64_t sq, uint64_t skv, uint64_t heads, uint64_t q_sb,
                              uint64_t q_ss, uint64_t k_sb, uint64_t k_ss, uint64_t v_sb, uint64_t v_ss,
                              float scale_log2, int tiles) {
    constexpr int KP = 16 * KT;           // keys, padded
    constexpr int DP = (D + 15) / 16 * 16; // head width, padded
    constexpr int LD = DP + 8;            // smem row stride (elements): ldmatrix rows on distinct banks
    constexpr int KS = DP / 16;           // k-steps of q kᵀ
    constexpr int NT = KP / 8;            // n-tiles of the scores
    static_assert(DP % (16 * OC) == 0, "the output's column chunks are whole k-steps");
    constexpr int OT = DP / 8 / OC;       // n-tiles of one column chunk of the output
    constexpr int OW = DP / OC;           // columns of one chunk
    T *ks, *vs;
    if constexpr (2 * KP * LD * sizeof(T) > 48 * 1024) {
        extern __shared__ __align__(16) unsigned char few_keys_smem[];
        ks = reinterpret_cast<T *>(few_keys_smem);
        vs = ks + KP * LD;
    } else {
        __shared__ __align__(16) T ks_static[KP * LD];
        __shared__ __align__(16) T vs_static[KP * LD];
        ks = ks_static;
        vs = vs_static;
    }
    const uint64_t img = blockIdx.z, h = blockIdx.y;
    const T *kb = k + img * k_sb + h * D, *vb = v + img * v_sb + h * D;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const T *qb = q + img * q_sb + h * D;
    const uint64_t hd = heads * D;
    T *ob = o + img * sq * hd + h * D;
    // q's A fragments of the 16 rows from r0, straight from global memory (zeros past sq and past D).
    uint32_t a[KS][4];
    auto load_q = [&](int64_t r0) {
#pragma unroll
        for (int s = 0; s < KS; ++s) {
            int c = s * 16 + t * 2;
            auto ld = [&](int64_t r, int col) -> uint32_t {
                return (r < (int64_t)sq && col < D) ? *reinterpret_cast<const uint32_t *>(qb + r * q_ss + col) : 0u;
            };
            a[s][0] = ld(r0 + g, c);
            a[s][1] = ld(r0 + g + 8, c);
            a[s][2] = ld(r0 + g, c + 8);
            a[s][3] = ld(r0 + g + 8, c + 8);
        }
    };
    // The block's rows: `tiles` 16-row tiles per warp, the warps interleaved.
    auto tile_row = [&](int tile) -> int64_t {
        return ((int64_t)blockIdx.x * tiles * FEW_KEYS_WARPS + (int64_t)tile * FEW_KEYS_WARPS + warp) * 16;
    };
    load_q(tile_row(0)); // in flight while the keys and values are staged
    // Keys and values into shared memory, 16 bytes at a time; zeros past skv and past D.
    for (int i = threadIdx.x; i < KP * (DP / 8); i += blockDim.x) {
        int row = i / (DP / 8), col = (i % (DP / 8)) * 8;
        uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
        if (row < (int)skv && col < D) {
            kv = *reinterpret_cast<const uint4 *>(kb + row * k_ss + col);
            vv = *reinterpret_cast<const uint4 *>(vb + row * v_ss + col);
        }
        *reinterpret_cast<uint4 *>(&ks[row * LD + col]) = kv;
        *reinterpret_cast<uint4 *>(&vs[row * LD + col]) = vv;
    }
    __syncthreads();
    for (int tile = 0; tile < tiles; ++tile) {
        const int64_t r0 = tile_row(tile);
        if (r0 >= (int64_t)sq) break;
        const int64_t ra = r0 + g, rb = r0 + g + 8;
        float sc[NT][4];
#pragma unroll
        for (int n = 0; n < NT; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
        for (int j = 0; j < KT; ++j) {
#pragma unroll
            for (int s = 0; s < KS; ++s) {
                uint32_t b[4];
                int key = j * 16 + ((lane >> 4) & 1) * 8 + (lane & 7), col = s * 16 + ((lane >> 3) & 1) * 8;
                ldsm_x4(b, &ks[key * LD + col]);
                Mma<T>::run(sc[2 * j], a[s], b[0], b[1]);
                Mma<T>::run(sc[2 * j + 1], a[s], b[2], b[3]);
            }
        }
        // The next tile's q, in flight while this tile's softmax and product run.
        if (tile + 1 < tiles) load_q(tile_row(tile + 1));
        // Row maxima (rows g and g + 8), the padded keys masked out.
        float ma = -INFINITY, mb = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            int key = n * 8 + t * 2;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                bool live = key + e < (int)skv;
                sc[n][e] = live ? sc[n][e] * scale_log2 : -INFINITY;
                sc[n][2 + e] = live ? sc[n][2 + e] * scale_log2 : -INFINITY;
                ma = fmaxf(ma, sc[n][e]);
                mb = fmaxf(mb, sc[n][2 + e]);
            }
        }
#pragma unroll
        for (int x = 1; x < 4; x <<= 1) {
            ma = fmaxf(ma, __shfl_xor_sync(0xffffffff, ma, x));
            mb = fmaxf(mb, __shfl_xor_sync(0xffffffff, mb, x));
        }
        float la = 0.0f, lb = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            sc[n][0] = ex2(sc[n][0] - ma);
            sc[n][1] = ex2(sc[n][1] - ma);
            sc[n][2] = ex2(sc[n][2] - mb);
            sc[n][3] = ex2(sc[n][3] - mb);
            la += sc[n][0] + sc[n][1];
            lb += sc[n][2] + sc[n][3];
        }
#pragma unroll
        for (int x = 1; x < 4; x <<= 1) {
            la += __shfl_xor_sync(0xffffffff, la, x);
            lb += __shfl_xor_sync(0xffffffff, lb, x);
        }
#pragma unroll
        for (int oc = 0; oc < OC; ++oc) {
            float acc[OT][4];
#pragma unroll
            for (int n = 0; n < OT; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
            for (int j = 0; j < KT; ++j) {
                // The probabilities rounded to the dtype: the A fragments of the product with the values.
                uint32_t p[4] = {Mma<T>::pack(sc[2 * j][0], sc[2 * j][1]), Mma<T>::pack(sc[2 * j][2], sc[2 * j][3]),
                                 Mma<T>::pack(sc[2 * j + 1][0], sc[2 * j + 1][1]),
                                 Mma<T>::pack(sc[2 * j + 1][2], sc[2 * j + 1][3])};
#pragma unroll
                for (int m = 0; m < OW / 16; ++m) {
                    uint32_t b[4];
                    int key = j * 16 + ((lane >> 3) & 1) * 8 + (lane & 7),
                        col = oc * OW + m * 16 + ((lane >> 4) & 1) * 8;
                    ldsm_x4_t(b, &vs[key * LD + col]);
                    Mma<T>::run(acc[2 * m], p, b[0], b[1]);
                    Mma<T>::run(acc[2 * m + 1], p, b[2], b[3]);
                }
            }
            const float ia = 1.0f / la, ib = 1.0f / lb;
#pragma unroll
            for (int n = 0; n < OT; ++n) {
                int c = oc * OW + n * 8 + t * 2;
                if (c >= D) continue;
                if (ra < (int64_t)sq)
                    *reinterpret_cast<uint32_t *>(ob + ra * hd + c) = Mma<T>::pack(acc[n][0] * ia, acc[n][1] * ia);
                if (rb < (int64_t)sq)
                    *reinterpret_cast<uint32_t *>(ob + rb * hd + c) = Mma<T>::pack(acc[n][2] * ib, acc[n][3] * ib);
            }
        }
    }
}

#define FEW_KEYS(T, S, D, OC, MINB)                                                                               \
    extern "C" __global__ void __launch_bounds__(32 * FEW_KEYS_WARPS, MINB)                                       \
        attn_few_keys_d##D##_##S(const T *q, const T *k, const T *v, T *o, uint64_t sq, uint64_t skv,            \
                                 uint64_t heads, uint64_t q_sb, uint64_t q_ss, uint64_t k_sb, uint64_t k_ss,     \
                                 uint64_t v_sb, uint64_t v_ss, float scale_log2, int tiles) {                    \
        attn_few_keys<T, D, 5, OC>(q, k, v, o, sq, skv, heads, q_sb, q_ss, k_sb, k_ss, v_sb, v_ss, scale_log2,  \
                                   tiles);                                                                        \
    }
FEW_KEYS(__half, f16, 40, 1, 4)
FEW_KEYS(__half, f16, 80, 1, 4)
FEW_KEYS(__half, f16, 160, 2, 2)
FEW_KEYS(__nv_bfloat16, bf16, 40, 1, 4)
FEW_KEYS(__nv_bfloat16, bf16, 80, 1, 4)
FEW_KEYS(__nv_bfloat16, bf16, 160, 2, 2)

// ---------------------------------------------------------------------------------------------
// Hopper's warpgroup MMAs (sm_90a), for attn_tma below.
// wgmma.mma_async, register A, shared-memory B (descriptor), f32 accumulators; TB: B MN-major.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <typename T, int N> struct Wg;
template <> struct Wg<__half, 64> {
    template <int TB>
    __device__ __forceinline__ static void run(float (&d)[32], const uint32_t a[4], uint64_t desc, int scale_d) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TB));
    }
};
template <> struct Wg<__nv_bfloat16, 64> {
    template <int TB>
    __device__ __forceinline__ static void run(float (&d)[32], const uint32_t a[4], uint64_t desc, int scale_d) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TB));
    }
};
#endif

// Rescaling the accumulator only when a row's maximum grew by more than 2^FLASH_SLACK (in the
// exponent's units) keeps every probability ≤ 2^FLASH_SLACK against the maximum in use: exact
// (numerator and sum share it) and well inside f16's and bf16's range.
#define FLASH_SLACK 8.0f

// A shared-memory matrix descriptor in the 32-byte swizzle (layout type 3), `lbo` and `sbo` in bytes.
__device__ __forceinline__ uint64_t wg_desc(const void *p, uint32_t lbo, uint32_t sbo) {
    uint64_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) | (3ull << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_fence_regs(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}


// ---------------------------------------------------------------------------------------------
// Attention over many keys with the keys and values brought in by the copy engine (TMA), sm_90a:
// FlashAttention-3's structure. A block is WG warpgroups of 64 query rows each (q's fragments in
// registers for the whole pass, the A operand of wgmma's register form); thread 0 also issues the
// cp.async.bulk.tensor loads of each tile of BN keys and values into a ring of STAGES stages, each completing on the stage's `full`
// mbarrier; each warp arrives on the stage's `empty` mbarrier once its last wgmma reading it has
// completed, and thread 0 waits on it before refilling, a tile later than it could (no producer
// warp: a 17th warp would cut every thread's registers to 94 at two blocks an SM). No block-wide
// barrier in the loop: the warpgroups drift apart, so one's softmax fills another's MMAs. With OVL, within a warpgroup the scores of tile j and the product of tile j − 1's
// probabilities with its values are in flight together while tile j's softmax runs (FA3's
// intra-warpgroup overlap); the accumulator is rescaled once the product has landed.
// The tiles, written by the copy engine from a 4-d tensor map per operand: (width, heads, tokens,
// images), box (16, 1, BN, 1); the columns past the head's width and the keys past skv arrive as
// zeros (keys past skv masked to −inf).
// Shared memory per tile of BN keys, for k and v alike, in wgmma's 32-byte swizzle: columns in
// slabs of 16 (32 bytes), slab a holding the tile's keys as rows of 32 bytes (BN · 32 bytes, from
// a · BN · 32), the two 16-byte halves of a row swapped in rows 4–7 of every 8 (address bit 4 ^=
// bit 7). For q kᵀ that is kᵀ K-major (one slab per k-step, stride offset 256 between key groups);
// for p v it is v MN-major (leading offset BN · 32 between slabs of 16 columns, stride offset 256
// between key groups). Where D is an odd multiple of 8 the copy engine fills the padded columns
// (40 → 48) with zeros.
// grid (⌈sq / (64 · WG)⌉, heads, b), block 128 · WG, dynamic shared memory attn_tma_smem().
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <> struct Wg<__half, 40> {
    template <int TB>
    __device__ __forceinline__ static void run(float (&d)[20], const uint32_t a[4], uint64_t desc, int scale_d) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n40k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, {%20, %21, %22, %23}, %24, p, 1, 1, %26;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TB));
    }
};
template <> struct Wg<__nv_bfloat16, 40> {
    template <int TB>
    __device__ __forceinline__ static void run(float (&d)[20], const uint32_t a[4], uint64_t desc, int scale_d) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, {%20, %21, %22, %23}, %24, p, 1, 1, %26;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d), "n"(TB));
    }
};
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbar_init(uint64_t *b, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *b, int parity) {
    asm volatile("{\n.reg .pred P1;\nWAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@!P1 bra WAIT;\n}\n" ::"r"(smem_u32(b)),
                 "r"(parity)
                 : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
// One box of a 4-d tensor map into shared memory, completing on mbarrier `b`.
__device__ __forceinline__ void tma_load4(void *dst, const void *map, int c0, int c1, int c2, int c3, uint64_t *b) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n"
                 ::"r"(smem_u32(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(b))
                 : "memory");
}
#endif

// Bytes of one tile of keys (and of values) and of the dynamic shared memory of attn_tma.
__host__ __device__ constexpr int attn_tma_tile(int d, int bn) { return (d + 15) / 16 * bn * 32; }
__host__ __device__ constexpr int attn_tma_smem(int d, int bn, int stages) { return stages * 2 * attn_tma_tile(d, bn) + 1024 + 2 * 8 * stages; }

template <typename T, int D, int WG, int STAGES, bool OVL, int EMU = 0>
__device__ void attn_tma(const void *tmk, const void *tmv, const T *__restrict__ q, T *__restrict__ o,
                         uint64_t sq, uint64_t skv, uint64_t heads, uint64_t q_sb, uint64_t q_ss,
                         float scale_log2) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int BN = 64;
    constexpr int DK = (D + 15) / 16 * 16; // q kᵀ's depth, padded with zero columns
    constexpr int KS = DK / 16;            // k-steps of q kᵀ, slabs of a tile
    constexpr int TILE = attn_tma_tile(D, BN);
    extern __shared__ unsigned char dsmem[];
    // The tiles at a 1024-byte boundary, the barriers after them.
    unsigned char *smem = reinterpret_cast<unsigned char *>((reinterpret_cast<uintptr_t>(dsmem) + 1023) & ~uintptr_t(1023));
    uint64_t *full = reinterpret_cast<uint64_t *>(smem + STAGES * 2 * TILE), *empty = full + STAGES;
    auto kbuf = [&](int i) { return smem + i * TILE; };
    auto vbuf = [&](int i) { return smem + (STAGES + i) * TILE; };
    const int img = blockIdx.z, h = blockIdx.y;
    const int tiles = (int)((skv + BN - 1) / BN);
    const int wg = threadIdx.x >> 7;
    static_assert(STAGES >= 3, "tile j refills the stage of tile j - 2");
    static_assert(EMU >= -1 && EMU <= BN / 8, "EMU: column groups of 8 on the FMA pipe (-1: none, a diagnostic)");
    if (threadIdx.x == 0) {
#pragma unroll
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 4 * WG);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    // Tile j into stage j % STAGES, by thread 0 once the stage's last reader has released it.
    auto produce = [&](int j) {
        const int st = j % STAGES;
        if (j >= STAGES) mbar_wait(&empty[st], ((j / STAGES) - 1) & 1);
        mbar_expect_tx(&full[st], 2 * TILE);
#pragma unroll
        for (int a = 0; a < KS; ++a) {
            tma_load4(kbuf(st) + a * BN * 32, tmk, a * 16, h, j * BN, img, &full[st]);
            tma_load4(vbuf(st) + a * BN * 32, tmv, a * 16, h, j * BN, img, &full[st]);
        }
    };
    if (threadIdx.x == 0)
        for (int j = 0; j < min(STAGES, tiles); ++j) produce(j);
    // At tile j, thread 0 refills the stage of tile j − 2 (released a tile earlier by its own warp,
    // so the wait is for the slower warpgroups only).
    auto refill = [&](int j) {
        if (threadIdx.x == 0 && j >= 2 && j - 2 + STAGES < tiles) produce(j - 2 + STAGES);
    };
    const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint64_t hd = heads * D;
    const T *qb = q + img * q_sb + h * D;
    T *ob = o + img * sq * hd + h * D;
    const int64_t ra = (int64_t)blockIdx.x * 64 * WG + wg * 64 + warp * 16 + g, rb = ra + 8;
    uint32_t qa[KS][4];
    auto ld = [&](int64_t r, int col) -> uint32_t {
        return (r < (int64_t)sq && col < D) ? *reinterpret_cast<const uint32_t *>(qb + r * q_ss + col) : 0u;
    };
#pragma unroll
    for (int s = 0; s < KS; ++s) {
        int c = s * 16 + t * 2;
        qa[s][0] = ld(ra, c);
        qa[s][1] = ld(rb, c);
        qa[s][2] = ld(ra, c + 8);
        qa[s][3] = ld(rb, c + 8);
    }
    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f};
    float acc[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] = 0.0f;
    const float slack = FLASH_SLACK / scale_log2;
    const uint64_t kd0 = wg_desc(kbuf(0), 16, 256), vd0 = wg_desc(vbuf(0), BN * 32, 256);
    float sc[BN / 2];
    uint32_t pa[BN / 16][4];

    auto issue_qk = [&](int st) {
        wg_fence_regs(sc);
        wg_fence();
#pragma unroll
        for (int s = 0; s < KS; ++s)
            Wg<T, BN>::template run<0>(sc, qa[s], kd0 + ((st * TILE + s * BN * 32) >> 4), s > 0 ? 1 : 0);
        wg_commit();
    };
    auto issue_pv = [&](int st) {
        wg_fence_regs(acc);
        wg_fence();
#pragma unroll
        for (int p = 0; p < BN / 16; ++p)
            Wg<T, D>::template run<1>(acc, pa[p], vd0 + ((st * TILE + p * 512) >> 4), 1);
        wg_commit();
    };
    auto release = [&](int st) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[st]);
    };
    // The softmax of the scores in sc (only `live` keys): the running maximum, the exponentials in
    // place, the row sums; returns whether the accumulator must be scaled by corr.
    auto softmax = [&](int live, float (&corr)[2]) -> bool {
        if (live < BN) {
#pragma unroll
            for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (n * 8 + t * 2 + (e & 1) >= live) sc[4 * n + e] = -INFINITY;
        }
        float tm[2];
        bool grow = false;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float x = sc[2 * r];
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) x = fmaxf(x, fmaxf(sc[4 * n + 2 * r], sc[4 * n + 2 * r + 1]));
            x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
            x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
            tm[r] = x;
            grow |= x > mx[r] + slack;
        }
        const bool any = __any_sync(0xffffffff, grow);
        corr[0] = corr[1] = 1.0f;
        if (any) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float nm = fmaxf(mx[r], tm[r]);
                corr[r] = ex2((mx[r] - nm) * scale_log2);
                mx[r] = nm;
                sum[r] *= corr[r];
            }
        }
        const float ms0 = mx[0] * scale_log2, ms1 = mx[1] * scale_log2;
        float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
            // EMU of the BN / 8 column groups (spread out) on the FMA pipe, the rest on the SFU;
            // EMU < 0: no exponentials at all (wrong results: the bench's diagnostic of what they cost).
            if (EMU < 0) {
                sc[4 * n + 0] = fmaf(sc[4 * n + 0], scale_log2, -ms0);
                sc[4 * n + 1] = fmaf(sc[4 * n + 1], scale_log2, -ms0);
                sc[4 * n + 2] = fmaf(sc[4 * n + 2], scale_log2, -ms1);
                sc[4 * n + 3] = fmaf(sc[4 * n + 3], scale_log2, -ms1);
            } else if ((n * EMU) % (BN / 8) < EMU) {
                sc[4 * n + 0] = ex2_fma(fmaf(sc[4 * n + 0], scale_log2, -ms0));
                sc[4 * n + 1] = ex2_fma(fmaf(sc[4 * n + 1], scale_log2, -ms0));
                sc[4 * n + 2] = ex2_fma(fmaf(sc[4 * n + 2], scale_log2, -ms1));
                sc[4 * n + 3] = ex2_fma(fmaf(sc[4 * n + 3], scale_log2, -ms1));
            } else {
                sc[4 * n + 0] = ex2(fmaf(sc[4 * n + 0], scale_log2, -ms0));
                sc[4 * n + 1] = ex2(fmaf(sc[4 * n + 1], scale_log2, -ms0));
                sc[4 * n + 2] = ex2(fmaf(sc[4 * n + 2], scale_log2, -ms1));
                sc[4 * n + 3] = ex2(fmaf(sc[4 * n + 3], scale_log2, -ms1));
            }
            ls0 += sc[4 * n + 0] + sc[4 * n + 1];
            ls1 += sc[4 * n + 2] + sc[4 * n + 3];
        }
        sum[0] += ls0;
        sum[1] += ls1;
        return any;
    };
    auto pack = [&]() {
#pragma unroll
        for (int p = 0; p < BN / 16; ++p)
#pragma unroll
            for (int i = 0; i < 4; ++i) pa[p][i] = Mma<T>::pack(sc[8 * p + 2 * i], sc[8 * p + 2 * i + 1]);
    };
    auto rescale = [&](const float (&corr)[2]) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            acc[4 * n + 0] *= corr[0];
            acc[4 * n + 1] *= corr[0];
            acc[4 * n + 2] *= corr[1];
            acc[4 * n + 3] *= corr[1];
        }
    };
    auto live_of = [&](int j) { return (int)min((uint64_t)BN, skv - (uint64_t)j * BN); };

    float corr[2];
    if constexpr (OVL) {
        mbar_wait(&full[0], 0);
        issue_qk(0);
        wg_wait<0>();
        wg_fence_regs(sc);
        softmax(live_of(0), corr); // the first maximum: nothing accumulated yet
        pack();
        for (int j = 1; j < tiles; ++j) {
            const int st = j % STAGES, pst = (j - 1) % STAGES;
            refill(j);
            mbar_wait(&full[st], (j / STAGES) & 1);
            issue_qk(st);
            issue_pv(pst);
            wg_wait<1>(); // the scores of tile j
            wg_fence_regs(sc);
            const bool any = softmax(live_of(j), corr);
            wg_wait<0>(); // the product of tile j − 1
            wg_fence_regs(acc);
            release(pst);
            if (any) rescale(corr);
            pack();
        }
        issue_pv((tiles - 1) % STAGES);
        wg_wait<0>();
        wg_fence_regs(acc);
        release((tiles - 1) % STAGES);
    } else {
        for (int j = 0; j < tiles; ++j) {
            const int st = j % STAGES;
            refill(j);
            mbar_wait(&full[st], (j / STAGES) & 1);
            issue_qk(st);
            wg_wait<0>();
            wg_fence_regs(sc);
            if (softmax(live_of(j), corr)) rescale(corr);
            pack();
            issue_pv(st);
            wg_wait<0>();
            wg_fence_regs(acc);
            release(st);
        }
    }
    float la = sum[0], lb = sum[1];
    la += __shfl_xor_sync(0xffffffff, la, 1);
    la += __shfl_xor_sync(0xffffffff, la, 2);
    lb += __shfl_xor_sync(0xffffffff, lb, 1);
    lb += __shfl_xor_sync(0xffffffff, lb, 2);
    const float ia = 1.0f / la, ib = 1.0f / lb;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        int c = n * 8 + t * 2;
        if (ra < (int64_t)sq)
            *reinterpret_cast<uint32_t *>(ob + ra * hd + c) = Mma<T>::pack(acc[4 * n] * ia, acc[4 * n + 1] * ia);
        if (rb < (int64_t)sq)
            *reinterpret_cast<uint32_t *>(ob + rb * hd + c) = Mma<T>::pack(acc[4 * n + 2] * ib, acc[4 * n + 3] * ib);
    }
#else
    __trap(); // built for sm_90a only (wgmma, the copy engine); the host takes this kernel only there
#endif
}

// The binary's configuration of attn_tma (bench/attn_tma.cu times the others; session 15 on an H100:
// 4 warpgroups with the overlap fastest at both widths, 1.116 ms at width 40 against 1.29 with 2
// warpgroups): ATTN_TMA_WG warpgroups a block (two blocks an SM at 2, one otherwise),
// ATTN_TMA_STAGES_D<width> stages, ATTN_TMA_OVL the intra-warpgroup overlap. Rust: fused/attention.rs
// `TMA_WARPGROUPS`, `tma_smem`.
#define ATTN_TMA_WG 4
#define ATTN_TMA_STAGES_D40 8
#define ATTN_TMA_STAGES_D64 6
#define ATTN_TMA_OVL true
// Column groups of 8 (of 8) whose exponentials run on the FMA pipe (ex2_fma): 0 until measured.
#define ATTN_TMA_EMU_D40 0
#define ATTN_TMA_EMU_D64 0
#define ATTN_TMA(T, S, D)                                                                                         \
    extern "C" __global__ void __launch_bounds__(128 * ATTN_TMA_WG, ATTN_TMA_WG == 2 ? 2 : 1)                      \
        attn_tma_d##D##_##S(const __grid_constant__ CUtensorMap tmk, const __grid_constant__ CUtensorMap tmv,    \
                            const T *q, T *o, uint64_t sq, uint64_t skv, uint64_t heads, uint64_t q_sb,          \
                            uint64_t q_ss, float scale_log2) {                                                   \
        attn_tma<T, D, ATTN_TMA_WG, ATTN_TMA_STAGES_D##D, ATTN_TMA_OVL, ATTN_TMA_EMU_D##D>(                       \
            &tmk, &tmv, q, o, sq, skv, heads, q_sb, q_ss, scale_log2);                                           \
    }
ATTN_TMA(__half, f16, 40)
ATTN_TMA(__half, f16, 64)
ATTN_TMA(__nv_bfloat16, bf16, 40)
ATTN_TMA(__nv_bfloat16, bf16, 64)
