// What the benches of this folder share: a CUDA call checked (the failure printed with its place, then
// exit 1) and the mean time of `iters` launches between two recorded events.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#define CK(x)                                                                                    \
    do {                                                                                         \
        cudaError_t e_ = (x);                                                                    \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));   \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

// Milliseconds per launch: the events' interval over `iters` launches.
static inline float ms_per(cudaEvent_t a, cudaEvent_t b, int iters) {
    float ms = 0.0f;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms / iters;
}
