# PyTorch's same ops on the same shapes as `shoal bench ops`, in the same call. Embedded in the binary
# and run by `shoal bench ops --peer torch`, which writes the list of ops that ran (JSON: [{"kind", "dims"}])
# and reads one JSON line per op back: {"i": k, "ms": [[variant, ms or null], ...]}.
#   python3 ops_peer.py OPS.json [--dtype f16|bf16|f32] [--device cuda|cuda:N|cpu] [--iters N] [--reps R] [--graphs]
# Each variant is timed as bench ops times: one warm-up call, then the mean of N calls with the device
# synchronized around them; with --graphs (bench ops --graphs), the N calls recorded as one CUDA graph
# (torch.cuda.graph, after warm-up calls on a side stream) and the mean of one replay; with --reps R,
# R such timings and their median. cudnn.benchmark is on (PyTorch picks its fastest convolution per shape).
# Convolutions: F.conv2d with bias, NCHW and channels_last (and with the residual added after, as diffusers'
# ResnetBlock2D does). Attention: F.scaled_dot_product_attention on (b, heads, s, d) views of (b, s, heads*d)
# rows, with PyTorch's default backend choice (what diffusers gets) and with cuDNN's. GroupNorm + SiLU, LayerNorm
# (+ the residual add before it), linear (+ GEGLU, + residual), the 2x nearest upsample and the channel
# concatenation of channels_last tensors: the eager ops diffusers calls.
import argparse, json, sys, time
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("ops")
ap.add_argument("--dtype", default="f16", choices=["f16", "bf16", "f32"])
ap.add_argument("--device", default="cuda")
ap.add_argument("--iters", type=int, default=20)
ap.add_argument("--reps", type=int, default=1)
ap.add_argument("--graphs", action="store_true")
a = ap.parse_args()
dt = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]
dev = torch.device(a.device)
torch.backends.cudnn.benchmark = True
CL = torch.channels_last


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(f):
    runs = sorted(bench_once(f) for _ in range(max(a.reps, 1)))
    n = len(runs)
    return runs[n // 2] if n % 2 else (runs[n // 2 - 1] + runs[n // 2]) / 2


def bench_once(f):
    f(); sync()
    if a.graphs:
        return bench_graph(f)
    t = time.perf_counter()
    for _ in range(a.iters): f()
    sync(); return (time.perf_counter() - t) / a.iters * 1e3


def bench_graph(f):
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(2): f()
    torch.cuda.current_stream(dev).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(a.iters): f()
    g.replay(); sync(); t = time.perf_counter()
    g.replay(); sync()
    ms = (time.perf_counter() - t) / a.iters * 1e3
    del g
    return ms


def rnd(*shape, scale=1.0):
    return torch.randn(*shape, device=dev, dtype=dt) * scale


def conv(n, c, s, k, r, st, residual=False, cl=False, bias=True):
    x, w, b = rnd(n, c, s, s), rnd(k, c, r, r, scale=(c * r * r) ** -0.5), rnd(k) if bias else None
    o = (s + 2 * (r // 2) - r) // st + 1
    res = rnd(n, k, o, o)
    xc, wc, rc = x.to(memory_format=CL), w.to(memory_format=CL), res.to(memory_format=CL)
    if residual:
        return [("channels_last + add", lambda: F.conv2d(xc, wc, b, st, r // 2) + rc)]
    if cl:
        return [("channels_last" if bias else "channels_last, no bias", lambda: F.conv2d(xc, wc, b, st, r // 2))]
    return [("nchw", lambda: F.conv2d(x, w, b, st, r // 2)), ("channels_last", lambda: F.conv2d(xc, wc, b, st, r // 2))]


def attn(n, sq, skv, dim, h):
    d = dim // h
    q = rnd(n, sq, dim).view(n, sq, h, d).transpose(1, 2)
    k = rnd(n, skv, dim).view(n, skv, h, d).transpose(1, 2)
    v = rnd(n, skv, dim).view(n, skv, h, d).transpose(1, 2)
    f = lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, sq, dim)

    def cudnn():
        from torch.nn.attention import sdpa_kernel, SDPBackend
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return f()
    return [("default", f), ("cudnn", cudnn)]


def group_norm_silu(n, c, s):
    x, w, b = rnd(n, c, s, s) + 0.5, rnd(c, scale=0.2) + 1, rnd(c, scale=0.2)
    xc = x.to(memory_format=CL)
    return [("nchw", lambda: F.silu(F.group_norm(x, 32, w, b, 1e-5))),
            ("channels_last", lambda: F.silu(F.group_norm(xc, 32, w, b, 1e-5)))]


def layer_norm(n, t, d, add=False):
    x, r, w, b = rnd(n, t, d) + 0.5, rnd(n, t, d), rnd(d, scale=0.2) + 1, rnd(d, scale=0.2)
    if add:
        def f():
            s = x + r
            return s, F.layer_norm(s, (d,), w, b, 1e-5)
        return [("add, layer_norm", f)]
    return [("layer_norm", lambda: F.layer_norm(x, (d,), w, b, 1e-5))]


def linear(n, t, cin, cout, how=None):
    x, w, b = rnd(n, t, cin), rnd(cout, cin, scale=cin ** -0.5), rnd(cout)
    if how == "geglu":
        def f():
            h, g = F.linear(x, w, b).chunk(2, dim=-1)
            return h * F.gelu(g)
        return [("linear, chunk, gelu, mul", f)]
    if how == "residual":
        r = rnd(n, t, cout)
        return [("linear + add", lambda: F.linear(x, w, b) + r)]
    return [("linear", lambda: F.linear(x, w, b))]


def upsample2x(n, s, c):
    x = rnd(n, c, s, s).to(memory_format=CL)
    return [("interpolate nearest, channels_last", lambda: F.interpolate(x, scale_factor=2.0, mode="nearest"))]


def cat_channels(n, s, c, c2):
    x, y = rnd(n, c, s, s).to(memory_format=CL), rnd(n, c2, s, s).to(memory_format=CL)
    return [("cat, channels_last", lambda: torch.cat([x, y], dim=1))]


OPS = {
    "conv": lambda n, c, s, k, r, st: conv(n, c, s, k, r, st),      # batch, in channels, side, out channels, kernel, stride
    "conv_res": lambda n, c, s, k, r, st: conv(n, c, s, k, r, st, residual=True),
    "conv_cl": lambda n, c, s, k, r, st: conv(n, c, s, k, r, st, cl=True),
    "conv_cl_nobias": lambda n, c, s, k, r, st: conv(n, c, s, k, r, st, cl=True, bias=False),
    "attn": attn,                                                  # batch, query tokens, key tokens, width, heads
    "group_norm_silu": group_norm_silu,                            # batch, channels, side (32 groups)
    "layer_norm": layer_norm,                                      # batch, tokens, features
    "add_layer_norm": lambda n, t, d: layer_norm(n, t, d, add=True),
    "linear": linear,                                              # batch, tokens, in, out
    "linear_geglu": lambda n, t, i, o: linear(n, t, i, o, "geglu"),
    "linear_res": lambda n, t, i, o: linear(n, t, i, o, "residual"),
    "upsample2x": upsample2x,                                      # batch, side, channels
    "cat_channels": cat_channels,                                  # batch, side, channels, skip channels
}

ops = json.load(open(a.ops))
cudnn = torch.backends.cudnn.version() if dev.type == "cuda" else None
reps = f", median of {a.reps} timings" if a.reps > 1 else ""
print(f"ops_peer.py: torch {torch.__version__}, cuDNN {cudnn}, {dt}, {dev}, {a.iters} iterations{reps}", flush=True)
with torch.no_grad():
    for i, op in enumerate(ops):
        if op["kind"] not in OPS:
            sys.exit(f"ops_peer.py: op {i}: unknown kind {op['kind']!r}")
        times = []
        for name, f in OPS[op["kind"]](*op["dims"]):
            try:
                times.append([name, bench(f)])
            except Exception as e:  # a variant this build cannot run (cuDNN attention on some shapes)
                print(f"ops_peer.py: op {i} ({op['kind']} {op['dims']}), {name}: {e}", file=sys.stderr)
                times.append([name, None])
        print(json.dumps({"i": i, "ms": times}), flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
