# diffusers' device_map="balanced" over 2 GPUs, model CPU offload, and plain, from ../shared/gpu/peer/sd_variants.py
# (sequential offload and torch.compile left out: shoal has neither to compare with).
import sys, time, torch
from diffusers import StableDiffusionPipeline
model = sys.argv[1]
def timeit(pipe, b, steps, reps=2):
    pipe(["a dog"] * b, num_inference_steps=2, height=512, width=512)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        pipe(["a dog"] * b, num_inference_steps=steps, height=512, width=512, guidance_scale=7.5)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, safety_checker=None, device_map="balanced", max_memory={0: "2GB", 1: "2GB"})
pipe.tokenizer.model_max_length = 77; pipe.set_progress_bar_config(disable=True)
print("hf_device_map", pipe.hf_device_map, flush=True)
for d in range(2): torch.cuda.reset_peak_memory_stats(d)
dt = timeit(pipe, 1, 30)
print(f"diffusers balanced b1 30 steps: {dt:.3f} s/img; peak GB", [round(torch.cuda.max_memory_allocated(d)/1e9, 2) for d in range(2)], flush=True)
del pipe; torch.cuda.empty_cache()
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, safety_checker=None)
pipe.tokenizer.model_max_length = 77; pipe.set_progress_bar_config(disable=True)
pipe.enable_model_cpu_offload()
torch.cuda.reset_peak_memory_stats(0)
dt = timeit(pipe, 1, 30)
print(f"diffusers model offload b1 30 steps: {dt:.3f} s/img; peak GB {torch.cuda.max_memory_allocated(0)/1e9:.2f}", flush=True)
del pipe; torch.cuda.empty_cache()
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, safety_checker=None).to("cuda:0")
pipe.tokenizer.model_max_length = 77; pipe.set_progress_bar_config(disable=True)
torch.cuda.reset_peak_memory_stats(0)
print(f"diffusers plain b1 30 steps: {timeit(pipe, 1, 30, 3):.3f} s/img; peak GB {torch.cuda.max_memory_allocated(0)/1e9:.2f}", flush=True)
