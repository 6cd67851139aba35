# diffusers + accelerate, the seed's way: PartialState().split_between_processes over the prompts,
# batches of 4 per process; timed from after load and warm-up to the last process's last image.
import sys, time, torch
from accelerate import PartialState
from diffusers import StableDiffusionPipeline
model, n = sys.argv[1], int(sys.argv[2])
state = PartialState()
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float16, safety_checker=None).to(state.device)
pipe.tokenizer.model_max_length = 77
pipe.set_progress_bar_config(disable=True)
prompts = [f"a photo of a red fox number {i + 1}" for i in range(n)]
pipe(prompts[:4], num_inference_steps=2)
torch.cuda.synchronize(); state.wait_for_everyone()
t = time.perf_counter()
with state.split_between_processes(prompts) as mine:
    for i in range(0, len(mine), 4):
        pipe(mine[i:i + 4], num_inference_steps=30, guidance_scale=7.5)
torch.cuda.synchronize(); state.wait_for_everyone()
dt = time.perf_counter() - t
if state.is_main_process:
    print(f"diffusers+accelerate {state.num_processes} process(es): {n} images in {dt:.2f} s = {n / dt:.3f} img/s", flush=True)
