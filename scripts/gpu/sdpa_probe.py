"""PyTorch's cuDNN SDPA on the attention shapes where shoal's call of the same kernel measured slower
(session 15 call C, H100): each shape as `ops_peer.py` builds it ((b, heads, s, d) views of (b, s,
heads * d) rows), run `--calls` times under the cuDNN backend, then timed over `--iters` calls
(CUDA events). Run under `ncu` to see which kernel cuDNN runs and for how long.
    python3 scripts/gpu/sdpa_probe.py [--calls 3] [--iters 50]"""
import argparse
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend

p = argparse.ArgumentParser()
p.add_argument("--calls", type=int, default=3)
p.add_argument("--iters", type=int, default=0)
a = p.parse_args()
SHAPES = [  # name, batch, tokens, width, heads (as bench ops' rows)
    ("sd15 l1 self d80", 16, 1024, 640, 8),
    ("sdxl l2 self d64", 16, 1024, 1280, 20),
    ("sdxl l1 self d64", 16, 4096, 640, 10),
]
dev = torch.device("cuda")
with torch.no_grad(), sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    for name, n, s, dim, h in SHAPES:
        d = dim // h
        q, k, v = (torch.randn(n, s, dim, device=dev, dtype=torch.float16).view(n, s, h, d).transpose(1, 2)
                   for _ in range(3))
        f = lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, dim)
        for _ in range(a.calls):
            f()
        torch.cuda.synchronize()
        if a.iters:
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            for _ in range(a.iters):
                f()
            t1.record()
            torch.cuda.synchronize()
            print(f"{name}: {t0.elapsed_time(t1) / a.iters:.4f} ms (PyTorch, cuDNN backend)", flush=True)
