# The diffusers side of `shoal bench sd`, measured the same way: same folder, steps, guidance, size, batches,
# 3 timed repetitions after a 2-step warm-up, and the peak of (total - free) device memory over the start of the
# process, polled every 20 ms (what `shoal bench sd` reports as "peak GPU memory over the start").
#   python3 scripts/gpu/peer_sd.py MODEL [--size 512 | --height H --width W] [--steps 30] [--batches 1,8]
#                                        [--guidance 7.5] [--dtype f16|bf16|f32] [--offload model|sequential]
#                                        [--compile] [--reps 3]
# SD 1.x/2.x and SDXL (chosen from model_index.json); SDXL's VAE upcasts as diffusers does by default.
# `shoal bench sd --peer diffusers` runs this script (embedded in the binary) and merges the tables.
import argparse, json, os, threading, time
import torch

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--size", type=int, default=512)
ap.add_argument("--height", type=int)
ap.add_argument("--width", type=int)
ap.add_argument("--guidance", type=float, default=7.5)
ap.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16")
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--batches", default="1,8")
ap.add_argument("--offload", choices=["model", "sequential"])
ap.add_argument("--compile", action="store_true")
ap.add_argument("--reps", type=int, default=3)
a = ap.parse_args()
height, width = a.height or a.size, a.width or a.size
dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[a.dtype]

base = torch.cuda.mem_get_info()
peak = [0]
stop = False
def poll():
    while not stop:
        f, t = torch.cuda.mem_get_info()
        peak[0] = max(peak[0], (t - f) - (base[1] - base[0]))
        time.sleep(0.02)
th = threading.Thread(target=poll, daemon=True); th.start()

cls = json.load(open(os.path.join(a.model, "model_index.json")))["_class_name"]
if "XL" in cls:
    from diffusers import StableDiffusionXLPipeline as P
else:
    from diffusers import StableDiffusionPipeline as P
kw = {} if "XL" in cls else {"safety_checker": None}
t0 = time.perf_counter()
pipe = P.from_pretrained(a.model, torch_dtype=dtype, **kw)
if a.offload == "model":
    pipe.enable_model_cpu_offload()
elif a.offload == "sequential":
    pipe.enable_sequential_cpu_offload()
else:
    pipe = pipe.to("cuda")
pipe.set_progress_bar_config(disable=True)
if hasattr(pipe, "tokenizer") and pipe.tokenizer is not None:
    pipe.tokenizer.model_max_length = 77
load_s = time.perf_counter() - t0
compile_s = None
if a.compile:
    pipe.unet.to(memory_format=torch.channels_last); pipe.vae.to(memory_format=torch.channels_last)
    pipe.unet = torch.compile(pipe.unet)
def run(b, steps):
    return pipe(["a dog"] * b, num_inference_steps=steps, height=height, width=width, guidance_scale=a.guidance)
import diffusers
print(f"peer_sd.py: {cls} {a.model}, {width}×{height}, {a.steps} steps, guidance {a.guidance}, {a.dtype}, "
      f"diffusers {diffusers.__version__}, torch {torch.__version__}, offload {a.offload}, "
      f"compile {a.compile}; load {load_s:.2f} s")
print("| batch | s/batch | img/s | first call s |")
print("| --- | --- | --- | --- |")
for b in [int(x) for x in a.batches.split(",")]:
    t = time.perf_counter(); run(b, 2); torch.cuda.synchronize(); first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(a.reps):
        run(b, a.steps)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / a.reps
    print(f"| {b} | {dt:.3f} | {b / dt:.3f} | {first:.2f} |", flush=True)
stop = True; th.join()
print(f"peak GPU memory over the start (total - free, polled): {peak[0] / 2**30:.2f} GiB")
