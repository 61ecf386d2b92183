"""GFLOP/s of one 512->512 dilated 3x3 conv at 97x193 (td4-psp18's layer4 shape) per dtype.

usage: python docs/experiments/conv_dtypes.py [THREADS]
fp32, bf16 and fp16, channels_last, three rounds alternating the dtypes; each figure is the
mean of 3 calls after one warm-up call.
"""

import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
x = torch.randn(1, 512, 97, 193).to(memory_format=torch.channels_last)
conv = torch.nn.Conv2d(512, 512, 3, padding=2, dilation=2, bias=False).eval().to(memory_format=torch.channels_last)
gflop = 2 * 512 * 512 * 9 * 97 * 193 / 1e9
rates: dict[str, list[float]] = {}
with torch.inference_mode():
    for _ in range(3):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            c, xx = conv.to(dtype), x.to(dtype)
            c(xx)
            t = time.perf_counter()
            for _ in range(3):
                c(xx)
            rates.setdefault(str(dtype).removeprefix("torch."), []).append(3 * gflop / (time.perf_counter() - t))
print(f"threads {torch.get_num_threads()}, torch {torch.__version__}")
for name, r in rates.items():
    print(f"{name}: {', '.join(f'{v:.0f}' for v in r)} GFLOP/s")
