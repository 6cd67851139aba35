
// ---------------------------------------------------------------------------------------------
// Attention over many keys (the self-attention over the latent's tokens), f16 and bf16, one
// pass over the keys (FlashAttention-2's structure): a block of 4 warps takes 64·MT query rows
// (MT 16-row tiles per warp, q's A fragments held in registers for the whole pass); the keys and
// values stream through shared memory in tiles of 64 (two buffers: the next tile's cp.async in
// flight while this one is used); per tile the scores as m16n8k16 MMAs into f32 (a last m16n8k8
// step where D is an odd multiple of 8: the width is never padded), the running row maximum and
// sum in f32 (the accumulator rescaled when the maximum moves), the probabilities rounded to T as
// the A fragments of the product with V (ldmatrix.trans), the sum divided out at the end. Views
// as for attn_few_keys; keys past skv are zero-filled in shared memory and masked to -inf.
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool live) {
    uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    int n = live ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

template <typename T> struct Mma8;
template <> struct Mma8<__half> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[2], uint32_t b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b0));
    }
};
template <> struct Mma8<__nv_bfloat16> {
    __device__ __forceinline__ static void run(float c[4], const uint32_t a[2], uint32_t b0) {
        asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                     "{%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(b0));
    }
};

#define FLASH_WARPS 4
#define FLASH_BN 64
// Rescaling the accumulator only when a row's maximum grew by more than 2^FLASH_SLACK (in
// the exponent's units) keeps every probability ≤ 2^FLASH_SLACK against the maximum in use:
// exact (numerator and sum share it) and well inside f16's and bf16's range.
#define FLASH_SLACK 8.0f

template <typename T, int D, int MT> struct Flash {
    static constexpr int BN = FLASH_BN;
    static constexpr int K16 = D / 16;               // full k-steps of q kᵀ
    static constexpr bool K8 = (D % 16) == 8;        // and a last half step
    static constexpr int LD = (D + 15) / 16 * 16 + 8; // smem row stride (elements): ldmatrix rows on distinct banks
    static constexpr int OT = D / 8;                 // n-tiles of the output
    static constexpr int CH = D / 8;                 // 16-byte chunks per row
    static constexpr int U = (BN * CH + 32 * FLASH_WARPS - 1) / (32 * FLASH_WARPS); // chunks per thread
    static_assert(D % 8 == 0, "head width a multiple of 8");

    uint32_t qa[MT][K16 > 0 ? K16 : 1][4];
    uint32_t q8[MT][2];
    float mx[MT][2], sum[MT][2], acc[MT][OT][4]; // mx: the maximum in use (of the unscaled scores)

    // One key tile into acc and sum; `live` of its keys (the rest masked when MASK); `slack`:
    // FLASH_SLACK in the unscaled scores' units.
    template <bool MASK>
    __device__ __forceinline__ void tile(const T *kt, const T *vt, int lane, float scale_log2, float slack, int live) {
        const int t = lane & 3;
        float sc[MT][BN / 8][4];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) sc[m][n][0] = sc[m][n][1] = sc[m][n][2] = sc[m][n][3] = 0.0f;
#pragma unroll
        for (int s = 0; s < K16; ++s) {
#pragma unroll
            for (int p = 0; p < BN / 16; ++p) {
                uint32_t b[4];
                int key = p * 16 + ((lane >> 4) & 1) * 8 + (lane & 7), col = s * 16 + ((lane >> 3) & 1) * 8;
                ldsm_x4(b, &kt[key * LD + col]);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    Mma<T>::run(sc[m][2 * p], qa[m][s], b[0], b[1]);
                    Mma<T>::run(sc[m][2 * p + 1], qa[m][s], b[2], b[3]);
                }
            }
        }
        if constexpr (K8) {
#pragma unroll
            for (int p = 0; p < BN / 32; ++p) {
                uint32_t b[4];
                ldsm_x4(b, &kt[(p * 32 + lane) * LD + K16 * 16]);
#pragma unroll
                for (int m = 0; m < MT; ++m)
#pragma unroll
                    for (int e = 0; e < 4; ++e) Mma8<T>::run(sc[m][p * 4 + e], q8[m], b[e]);
            }
        }
        // The padded keys to -inf.
        if constexpr (MASK) {
#pragma unroll
            for (int m = 0; m < MT; ++m)
#pragma unroll
                for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        if (n * 8 + t * 2 + (e & 1) >= live) sc[m][n][e] = -INFINITY;
        }
        // Each row's tile maximum; where one grew past the slack, every row of the warp takes its new maximum.
        float tm[MT][2];
        bool grow = false;
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                float x = sc[m][0][2 * r];
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) x = fmaxf(x, fmaxf(sc[m][n][2 * r], sc[m][n][2 * r + 1]));
                x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 1));
                x = fmaxf(x, __shfl_xor_sync(0xffffffff, x, 2));
                tm[m][r] = x;
                grow |= x > mx[m][r] + slack;
            }
        if (__any_sync(0xffffffff, grow)) {
#pragma unroll
            for (int m = 0; m < MT; ++m)
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const float nm = fmaxf(mx[m][r], tm[m][r]);
                    const float corr = ex2((mx[m][r] - nm) * scale_log2);
                    mx[m][r] = nm;
                    sum[m][r] *= corr;
#pragma unroll
                    for (int n = 0; n < OT; ++n) {
                        acc[m][n][2 * r] *= corr;
                        acc[m][n][2 * r + 1] *= corr;
                    }
                }
        }
        uint32_t pa[MT][BN / 16][4];
#pragma unroll
        for (int m = 0; m < MT; ++m) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const float ms = mx[m][r] * scale_log2;
                float ls = 0.0f;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    sc[m][n][2 * r] = ex2(fmaf(sc[m][n][2 * r], scale_log2, -ms));
                    sc[m][n][2 * r + 1] = ex2(fmaf(sc[m][n][2 * r + 1], scale_log2, -ms));
                    ls += sc[m][n][2 * r] + sc[m][n][2 * r + 1];
                }
                sum[m][r] += ls;
            }
#pragma unroll
            for (int p = 0; p < BN / 16; ++p) {
                pa[m][p][0] = Mma<T>::pack(sc[m][2 * p][0], sc[m][2 * p][1]);
                pa[m][p][1] = Mma<T>::pack(sc[m][2 * p][2], sc[m][2 * p][3]);
                pa[m][p][2] = Mma<T>::pack(sc[m][2 * p + 1][0], sc[m][2 * p + 1][1]);
                pa[m][p][3] = Mma<T>::pack(sc[m][2 * p + 1][2], sc[m][2 * p + 1][3]);
            }
        }
        // acc += P V.
#pragma unroll
        for (int p = 0; p < BN / 16; ++p) {
#pragma unroll
            for (int c = 0; c < OT / 2; ++c) {
                uint32_t b[4];
                int key = p * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), col = c * 16 + ((lane >> 4) & 1) * 8;
                ldsm_x4_t(b, &vt[key * LD + col]);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    Mma<T>::run(acc[m][2 * c], pa[m][p], b[0], b[1]);
                    Mma<T>::run(acc[m][2 * c + 1], pa[m][p], b[2], b[3]);
                }
            }
        }
        if constexpr (OT % 2 == 1) {
#pragma unroll
            for (int p = 0; p < BN / 32; ++p) {
                uint32_t b[4];
                ldsm_x4_t(b, &vt[(p * 32 + lane) * LD + (OT - 1) * 8]);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    Mma<T>::run(acc[m][OT - 1], pa[m][2 * p], b[0], b[1]);
                    Mma<T>::run(acc[m][OT - 1], pa[m][2 * p + 1], b[2], b[3]);
                }
            }
        }
    }
};

// grid (⌈sq / (64·MT)⌉, heads, b), block 32·FLASH_WARPS. k_ss, v_ss < 2^24 (64 rows' offsets in 32 bits).
template <typename T, int D, int MT>
__device__ void attn_flash(const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                           T *__restrict__ o, uint64_t sq, uint64_t skv, uint64_t heads, uint64_t q_sb,
                           uint64_t q_ss, uint64_t k_sb, uint64_t k_ss, uint64_t v_sb, uint64_t v_ss,
                           float scale_log2) {
    using F = Flash<T, D, MT>;
    constexpr int BN = F::BN, LD = F::LD, CH = F::CH, U = F::U, K16 = F::K16, OT = F::OT;
    __shared__ __align__(16) T ks[2][BN * LD];
    __shared__ __align__(16) T vs[2][BN * LD];
    const uint64_t img = blockIdx.z, h = blockIdx.y;
    const T *kb = k + img * k_sb + h * D, *vb = v + img * v_sb + h * D;
    const T *qb = q + img * q_sb + h * D;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint64_t hd = heads * D;
    T *ob = o + img * sq * hd + h * D;
    const int64_t row0 = ((int64_t)blockIdx.x * FLASH_WARPS + warp) * 16 * MT;
    const int full = (int)(skv / BN), tiles = (int)((skv + BN - 1) / BN);

    // Each thread's chunks of a tile: shared-memory offset, row and column.
    int srow[U], scol[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
        int i = threadIdx.x + u * 32 * FLASH_WARPS;
        srow[u] = i / CH;
        scol[u] = (i % CH) * 8;
    }
    auto load_tile = [&](int buf, int j) {
        const T *kj = kb + (uint64_t)j * BN * k_ss, *vj = vb + (uint64_t)j * BN * v_ss;
        const int live = (int)min((uint64_t)BN, skv - (uint64_t)j * BN);
#pragma unroll
        for (int u = 0; u < U; ++u) {
            if (srow[u] < BN) {
                bool ok = srow[u] < live;
                int r = ok ? srow[u] : 0;
                cp_async16(&ks[buf][srow[u] * LD + scol[u]], kj + (uint32_t)(r * (uint32_t)k_ss) + scol[u], ok);
                cp_async16(&vs[buf][srow[u] * LD + scol[u]], vj + (uint32_t)(r * (uint32_t)v_ss) + scol[u], ok);
            }
        }
    };
    load_tile(0, 0);
    cp_async_commit();

    F f;
    // q's A fragments (zeros past sq), in flight while the first tile lands.
    auto ld = [&](int64_t r, int col) -> uint32_t {
        return r < (int64_t)sq ? *reinterpret_cast<const uint32_t *>(qb + r * q_ss + col) : 0u;
    };
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        const int64_t ra = row0 + m * 16 + g, rb = ra + 8;
#pragma unroll
        for (int s = 0; s < K16; ++s) {
            int c = s * 16 + t * 2;
            f.qa[m][s][0] = ld(ra, c);
            f.qa[m][s][1] = ld(rb, c);
            f.qa[m][s][2] = ld(ra, c + 8);
            f.qa[m][s][3] = ld(rb, c + 8);
        }
        if constexpr (F::K8) {
            f.q8[m][0] = ld(ra, K16 * 16 + t * 2);
            f.q8[m][1] = ld(rb, K16 * 16 + t * 2);
        }
        f.mx[m][0] = f.mx[m][1] = -INFINITY;
        f.sum[m][0] = f.sum[m][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < OT; ++n) f.acc[m][n][0] = f.acc[m][n][1] = f.acc[m][n][2] = f.acc[m][n][3] = 0.0f;
    }

    const float slack = FLASH_SLACK / scale_log2;
    for (int j = 0; j < tiles; ++j) {
        cp_async_wait_all();
        __syncthreads(); // tile j landed for every thread; every warp is done with tile j − 1's buffer
        if (j + 1 < tiles) load_tile((j + 1) & 1, j + 1);
        cp_async_commit();
        if (j < full)
            f.template tile<false>(ks[j & 1], vs[j & 1], lane, scale_log2, slack, BN);
        else
            f.template tile<true>(ks[j & 1], vs[j & 1], lane, scale_log2, slack, (int)(skv - (uint64_t)j * BN));
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
        const int64_t ra = row0 + m * 16 + g, rb = ra + 8;
        float la = f.sum[m][0], lb = f.sum[m][1];
        la += __shfl_xor_sync(0xffffffff, la, 1);
        la += __shfl_xor_sync(0xffffffff, la, 2);
        lb += __shfl_xor_sync(0xffffffff, lb, 1);
        lb += __shfl_xor_sync(0xffffffff, lb, 2);
        const float ia = 1.0f / la, ib = 1.0f / lb;
#pragma unroll
        for (int n = 0; n < OT; ++n) {
            int c = n * 8 + t * 2;
            if (ra < (int64_t)sq)
                *reinterpret_cast<uint32_t *>(ob + ra * hd + c) = Mma<T>::pack(f.acc[m][n][0] * ia, f.acc[m][n][1] * ia);
            if (rb < (int64_t)sq)
                *reinterpret_cast<uint32_t *>(ob + rb * hd + c) = Mma<T>::pack(f.acc[m][n][2] * ib, f.acc[m][n][3] * ib);
        }
    }
}

#define FLASH(T, S, D, MT, MINB)                                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * FLASH_WARPS, MINB)                                          \
        attn_flash_d##D##_m##MT##_##S(const T *q, const T *k, const T *v, T *o, uint64_t sq, uint64_t skv,       \
                                      uint64_t heads, uint64_t q_sb, uint64_t q_ss, uint64_t k_sb, uint64_t k_ss, \
                                      uint64_t v_sb, uint64_t v_ss, float scale_log2, int tiles) {                \
        (void)tiles;                                                                                              \
        attn_flash<T, D, MT>(q, k, v, o, sq, skv, heads, q_sb, q_ss, k_sb, k_ss, v_sb, v_ss, scale_log2);         \
    }
#define FLASHES(T, S)                                                                                             \
    FLASH(T, S, 40, 1, 4)                                                                                         \
    FLASH(T, S, 40, 2, 2)                                                                                         \
    FLASH(T, S, 64, 1, 3)                                                                                         \
    FLASH(T, S, 64, 2, 2)                                                                                         \
    FLASH(T, S, 80, 1, 3)
FLASHES(__half, f16)
FLASHES(__nv_bfloat16, bf16)
