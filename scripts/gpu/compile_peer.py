# diffusers eager and torch.compile on the same files, one process, for the side-by-side
# table of issue 11 (shoal bench sd runs in the same GPU call).
#   python3 compile_peer.py MODEL STEPS BATCHES      e.g. /tmp/sd15 30 1,8
# Compiled as diffusers documents it for speed: UNet and VAE channels_last,
# torch.compile(fullgraph=True) of the UNet and of vae.decode, default mode.
# "compile" is the wall time of the first call at a batch size (2 steps), which holds the
# compilation for that shape.
import sys, time, torch
from diffusers import StableDiffusionPipeline

model, steps = sys.argv[1], int(sys.argv[2])
batches = [int(x) for x in sys.argv[3].split(",")]


def run(pipe, b, n):
    pipe(["a dog"] * b, num_inference_steps=n, height=512, width=512, guidance_scale=7.5)


def timeit(pipe, b, reps=3):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        run(pipe, b, steps)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


t = time.perf_counter()
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, safety_checker=None).to("cuda:0")
pipe.tokenizer.model_max_length = 77
pipe.set_progress_bar_config(disable=True)
print(f"load {time.perf_counter() - t:.2f} s", flush=True)
for b in batches:
    run(pipe, b, 2)
    torch.cuda.reset_peak_memory_stats(0)
    dt = timeit(pipe, b)
    peak = torch.cuda.max_memory_allocated(0) / 2**30
    print(f"eager batch {b}: {dt:.3f} s/batch, {b / dt:.3f} img/s, peak allocated {peak:.2f} GiB", flush=True)
pipe.unet.to(memory_format=torch.channels_last)
pipe.vae.to(memory_format=torch.channels_last)
pipe.unet = torch.compile(pipe.unet, fullgraph=True)
pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=True)
for b in batches:
    torch.cuda.synchronize()
    t = time.perf_counter()
    run(pipe, b, 2)
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t
    torch.cuda.reset_peak_memory_stats(0)
    dt = timeit(pipe, b)
    peak = torch.cuda.max_memory_allocated(0) / 2**30
    print(
        f"compiled batch {b}: {dt:.3f} s/batch, {b / dt:.3f} img/s, compile (first call, 2 steps) {compile_s:.1f} s, peak allocated {peak:.2f} GiB",
        flush=True,
    )
print(f"torch {torch.__version__}", flush=True)
