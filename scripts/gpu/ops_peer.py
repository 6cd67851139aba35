# PyTorch's same ops on the same shapes as `shoal bench ops` (src/cli/bench_ops.rs), in the same call:
#   python3 scripts/gpu/ops_peer.py [f16|bf16] [batches, e.g. 2,16]
# Convolutions: F.conv2d with bias, cudnn.benchmark on, NCHW and channels_last. Attention: F.scaled_dot_product_attention
# on (b, heads, s, d) views of (b, s, heads*d) rows, PyTorch's default backend choice (what diffusers gets) and cuDNN.
import sys, time, torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
dt = {"f16": torch.float16, "bf16": torch.bfloat16}[sys.argv[1] if len(sys.argv) > 1 else "f16"]
batches = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "2,16").split(",")]
torch.backends.cudnn.benchmark = True
UNET = [("conv_in", 4, 64, 320, 3, 1), ("l0 resnet", 320, 64, 320, 3, 1), ("l0 proj 1x1", 320, 64, 320, 1, 1),
        ("l0 down", 320, 64, 320, 3, 2), ("l1 resnet in", 320, 32, 640, 3, 1), ("l1 resnet", 640, 32, 640, 3, 1),
        ("l1 shortcut 1x1", 320, 32, 640, 1, 1), ("l1 down", 640, 32, 640, 3, 2), ("l2 resnet in", 640, 16, 1280, 3, 1),
        ("l2 resnet", 1280, 16, 1280, 3, 1), ("l2 down", 1280, 16, 1280, 3, 2), ("l3/mid resnet", 1280, 8, 1280, 3, 1),
        ("up0 resnet in", 2560, 8, 1280, 3, 1), ("up0 shortcut 1x1", 2560, 8, 1280, 1, 1),
        ("up1 upsample", 1280, 16, 1280, 3, 1), ("up1 resnet in", 1920, 16, 1280, 3, 1),
        ("up2 resnet in", 1920, 32, 640, 3, 1), ("up2 resnet in b", 960, 32, 640, 3, 1),
        ("up3 resnet in", 960, 64, 320, 3, 1), ("up3 resnet in b", 640, 64, 320, 3, 1), ("conv_out", 320, 64, 4, 3, 1)]
VAE = [("vae conv_in", 4, 64, 512, 3, 1), ("vae 512@64", 512, 64, 512, 3, 1), ("vae 512@128", 512, 128, 512, 3, 1),
       ("vae 512@256", 512, 256, 512, 3, 1), ("vae 512→256@256", 512, 256, 256, 3, 1), ("vae 256@256", 256, 256, 256, 3, 1),
       ("vae 256@512", 256, 512, 256, 3, 1), ("vae 256→128@512", 256, 512, 128, 3, 1), ("vae 128@512", 128, 512, 128, 3, 1),
       ("vae conv_out", 128, 512, 3, 3, 1)]
ATTN = [("sd15 l0 self d40", 4096, 4096, 320, 8), ("sd15 l0 cross d40", 4096, 77, 320, 8),
        ("sd15 l1 self d80", 1024, 1024, 640, 8), ("sd15 l1 cross d80", 1024, 77, 640, 8),
        ("sd15 l2 self d160", 256, 256, 1280, 8), ("sd15 mid self d160", 64, 64, 1280, 8),
        ("sdxl l1 self d64", 4096, 4096, 640, 10), ("sdxl l2 self d64", 1024, 1024, 1280, 20)]

def bench(f, iters=20):
    f(); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(iters): f()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / iters

print(f"ops_peer.py: torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {dt}")
print("| op | shape | torch NCHW ms | torch channels_last ms | best TFLOP/s |"); print("| --- | --- | --- | --- | --- |")
with torch.no_grad():
    for n, (name, c, s, k, r, st) in [(n, x) for n in batches for x in UNET] + [(1, x) for x in VAE]:
        x = torch.randn(n, c, s, s, device="cuda", dtype=dt); w = torch.randn(k, c, r, r, device="cuda", dtype=dt) / (c * r * r) ** 0.5
        b = torch.randn(k, device="cuda", dtype=dt)
        t1 = bench(lambda: F.conv2d(x, w, b, st, r // 2))
        xc, wc = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
        t2 = bench(lambda: F.conv2d(xc, wc, b, st, r // 2))
        o = (s + 2 * (r // 2) - r) // st + 1; fl = 2 * n * k * o * o * c * r * r
        print(f"| {name} | {n}×{c}×{s}² → {k}, {r}×{r}/{st} | {t1*1e3:.3f} | {t2*1e3:.3f} | {fl/min(t1,t2)/1e12:.0f} |")
    print("| op | shape | torch default ms | torch cuDNN ms | best TFLOP/s |"); print("| --- | --- | --- | --- | --- |")
    for n in batches:
        for name, sq, skv, dim, h in ATTN:
            d = dim // h
            q = torch.randn(n, sq, dim, device="cuda", dtype=dt).view(n, sq, h, d).transpose(1, 2)
            k = torch.randn(n, skv, dim, device="cuda", dtype=dt).view(n, skv, h, d).transpose(1, 2)
            v = torch.randn(n, skv, dim, device="cuda", dtype=dt).view(n, skv, h, d).transpose(1, 2)
            f = lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, sq, dim)
            t1 = bench(f)
            try:
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION): t2 = bench(f)
            except Exception: t2 = float("nan")
            fl = 4 * n * h * sq * skv * d
            print(f"| {name} | {n}×{h} heads, q {sq}, k {skv}, d {d} | {t1*1e3:.3f} | {t2*1e3:.3f} | {fl/min(t1, t2 if t2 == t2 else t1)/1e12:.0f} |")
