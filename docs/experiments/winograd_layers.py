"""Time each 3x3 conv shape of td4-psp18 / td2-psp50 at 769x1537 as a direct oneDNN convolution
and as WinogradConv2d (CPU, fp32, channels_last), with the error of each against float64.
This is what chose ``use_winograd``'s 256-channel threshold (docs/benchmarks.md).

usage: python docs/experiments/winograd_layers.py [REPEATS]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn

from tdnet_cli.models.winograd import WinogradConv2d

# (in, out, dilation, height, width): the stride-1 3x3 convs of the dilated ResNets at 769x1537
SHAPES = [
    (512, 512, 4, 97, 193),  # layer4 (both models)
    (256, 512, 4, 97, 193),  # first conv of layer4 (ResNet-18)
    (256, 256, 2, 97, 193),  # layer3
    (512, 128, 1, 97, 193),  # pyramid-pooling bottleneck of a td4 path
    (128, 128, 1, 97, 193),  # layer2
    (64, 64, 1, 193, 385),  # layer1
]


def median_ms(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main(repeats: int = 5) -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {repeats}")
    print("in->out dilation size | direct ms | winograd ms | speed-up | rel. error direct / winograd")
    with torch.inference_mode():
        for cin, cout, d, h, w in SHAPES:
            conv = nn.Conv2d(cin, cout, 3, padding=d, dilation=d).eval()
            wino = WinogradConv2d.from_conv(conv)
            x = torch.randn(1, cin, h, w).contiguous(memory_format=torch.channels_last)
            exact = torch.nn.functional.conv2d(
                x.double(), conv.weight.double(), conv.bias.double(), padding=d, dilation=d
            )
            scale = exact.abs().max().item()
            err = [(m(x).double() - exact).abs().max().item() / scale for m in (conv, wino)]
            t_direct, t_wino = median_ms(conv, x, repeats), median_ms(wino, x, repeats)
            print(
                f"{cin}->{cout} d{d} {h}x{w} | {t_direct:.1f} | {t_wino:.1f} | {t_direct / t_wino:.2f}x | "
                f"{err[0]:.1e} / {err[1]:.1e}",
                flush=True,
            )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
