"""Frame-level inference: uint8 RGB frames in, train-id label maps out.

`Predictor` wraps a streaming model with the preprocessing its weights expect (resize
to the model input, normalise) and the post-processing users want (logits resized to
the frame size, bilinear with align_corners=True, then argmax). It is the one object
that `segment`, `eval` and `bench` drive. A `Stream` holds one stream's state.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tdnet_cli.errors import TdnetError, UsageError
from tdnet_cli.models.attention import Memory
from tdnet_cli.models.checkpoint import LoadedModel, load_checkpoint, random_model
from tdnet_cli.models.fast import optimize_for_inference
from tdnet_cli.models.tdnet import StreamState, TDNet
from tdnet_cli.models.winograd import WinogradConv2d, keep_out_of_compiled_graphs
from tdnet_cli.upsample import upsample_argmax

__all__ = [
    "COMPILE_MODES",
    "DEFAULT_PRESET",
    "PRECISIONS",
    "Encoded",
    "Predictor",
    "Stream",
    "bundled_weights",
    "random_weights_warning",
    "resolve_device",
    "upsample_argmax",
]

DEFAULT_PRESET = "td4-mini"
BUNDLED_WEIGHTS = "td4-mini-synth.pt"
RANDOM_WEIGHTS = "random weights"  # the words in every warning of a model without trained weights
PRECISIONS = ("fp32", "bf16", "fp16")
# torch.compile's modes; "reduce-overhead" replays CUDA graphs (one launch per step on a GPU)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the modes that replay CUDA graphs
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def random_weights_warning(model: str) -> str:
    """What every command says of a model that runs with random weights (no --weights)."""
    return (
        f"{RANDOM_WEIGHTS} ({model}): its predictions are meaningless; pass --weights FILE or URL for real "
        "ones (weights/README.md links the authors' checkpoints)"
    )


def bundled_weights() -> Path | None:
    """The demo checkpoint shipped in the repository's ``weights/`` folder, if present."""
    env = os.environ.get("TDNET_WEIGHTS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "weights" / BUNDLED_WEIGHTS)
    return next((p for p in candidates if p.is_file()), None)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an unavailable device is a usage error."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("CUDA is not available on this machine", hint="use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"no GPU {dev.index}: this machine has {torch.cuda.device_count()}", hint="pick another cuda:N"
            )
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {device!r}", hint="use auto, cpu, cuda or cuda:N")
    return dev


@dataclass
class Stream:
    """One video stream (or a batch of streams run in lockstep) through a predictor."""

    state: StreamState
    batch: int = 1
    frames: int = 0
    resets: int = 0
    _initial: StreamState = field(repr=False, default=None)  # type: ignore[assignment]

    def reset(self) -> None:
        """Start a new stream: the memory queue is emptied (e.g. at a scene cut)."""
        self.state = self._initial
        self.resets += 1


@dataclass(frozen=True)
class Encoded:
    """One frame batch's own features for a known path, made by :meth:`Predictor.encode`:
    everything of a TDNet step that does not depend on the stream's memory."""

    path: int
    values: torch.Tensor
    queries: torch.Tensor
    memory: Memory
    batch: int


class Predictor:
    """A model ready to segment frames on a device at a precision."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        optimize: bool = True,
        compile: bool | str = False,
        winograd: bool | None = None,
    ) -> None:
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}", hint="use fp32, bf16 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            raise UsageError("fp16 needs a CUDA device", hint="use --precision bf16 on the CPU")
        self.loaded = loaded
        self.precision = precision
        self.optimized = optimize
        # fp32 means fp32: TF32 convolutions moved the conformance argmax to 99.83% on an H200.
        # Off only while this predictor runs the model (_autocast): training validates with a
        # predictor, and its own steps keep the TF32 setting they had.
        self._tf32_off = self.device.type == "cuda" and precision == "fp32"
        # channels_last pays on the CPU (oneDNN); on an H200 the NCHW plain path ran td4-psp18 in
        # 6.3 ms against 16.1 ms for channels_last (docs/benchmarks.md), so GPUs keep NCHW.
        channels_last = self.device.type == "cpu"
        # Winograd 3x3 convs (None = auto): CPU fp32 only (bf16 has oneDNN's AMX kernels); compiled
        # graphs run those layers eagerly between them (docs/benchmarks.md, third CPU run).
        if winograd is None:
            winograd = self.device.type == "cpu" and precision == "fp32"
        model = (
            optimize_for_inference(loaded.model, channels_last=channels_last, winograd=bool(winograd))
            if optimize
            else loaded.model.eval()
        )
        self.model = model.to(self.device)
        # whether any layer runs as Winograd products (a narrow model has none wide enough)
        self.winograd = any(isinstance(m, WinogradConv2d) for m in self.model.modules())
        self.channels_last = bool(getattr(model, "channels_last", False))
        # torch.compile: True = default mode; a string picks one, e.g. "reduce-overhead" (CUDA
        # graphs) or "max-autotune". Only the tensor work is compiled, one function per path,
        # so the frame counter in the stream state never triggers a recompile.
        if compile and compile is not True and compile not in COMPILE_MODES:
            raise UsageError(f"unknown compile mode {compile!r}", hint=f"choose one of {', '.join(COMPILE_MODES)}")
        self._compile_mode = None if compile in (True, "default") else (str(compile) if compile else None)
        self._compiled: dict[int, object] | None = {} if compile else None
        if compile and self.winograd:
            keep_out_of_compiled_graphs()
        self._mean = torch.tensor(loaded.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(loaded.std, device=self.device).view(1, 3, 1, 1) * 255.0
        # (1, 256, 3) float32: (v - mean) / std for each uint8 v and channel, computed as the
        # GPU path computes it, so one cv2.LUT call normalises a CPU frame with the same values
        # (0.24 ms for 512x256 against 0.9-1.9 ms through torch ops, docs/benchmarks.md)
        levels = torch.arange(256, dtype=torch.float32).view(1, 1, 256, 1).expand(1, 3, 256, 1)
        self._norm_table = ((levels - self._mean.cpu()) / self._std.cpu())[0, :, :, 0].T.contiguous().numpy()[None]
        self.notes: list[str] = []  # what to tell the user before a run (demo model, random weights, --compile)
        self.warnings: list[str] = []  # the notes a result's "warnings" must carry (random weights)
        # Per-stage wall time (seconds), accumulated by `segment`; `bench` reads it. With
        # `sync_stages` CUDA is synchronised between stages so the split is honest (slower).
        self.stage_seconds = {"preprocess": 0.0, "model": 0.0, "postprocess": 0.0}
        self.sync_stages = False
        self._stage_lock = threading.Lock()  # stages run on the reader, model, encoder and writer threads
        self.encode_ahead = True  # let pipelines encode frames ahead where that applies (encodes_ahead)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        weights: str | os.PathLike | None = None,
        model: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        optimize: bool = True,
        compile: bool | str = False,
        winograd: bool | None = None,
    ) -> Predictor:
        """From ``--weights`` and/or ``--model``; neither means the bundled demo model."""
        notes = []
        # Each loader checks, before building anything, that the model's weights and activations
        # at this size fit on this device (else the kernel kills the process without a word).
        dev = resolve_device(device)
        fits = {"input_size": input_size, "device": dev, "precision": precision}
        if weights is not None:
            loaded = load_checkpoint(weights, preset=model, source="the --weights path", **fits)
        elif model is not None:
            loaded = random_model(model, **fits)
            notes.append(random_weights_warning(model))
        else:
            bundled = bundled_weights()
            if bundled is not None:
                loaded = load_checkpoint(bundled, **fits)
                notes.append(
                    "using the bundled demo model (trained on synthetic scenes); for real footage pass "
                    "--weights td4-psp18.pkl, the authors' Cityscapes checkpoint (see weights/README.md)"
                )
            else:
                loaded = random_model(DEFAULT_PRESET, **fits)
                notes.append(f"no bundled weights found; {random_weights_warning(DEFAULT_PRESET)}")
        pred = cls(loaded, device=dev, precision=precision, optimize=optimize, compile=compile, winograd=winograd)
        if compile:
            notes.append(
                f"--compile: each of the model's {pred.num_paths} path(s) compiles on its first frame "
                "(tens of seconds each on a CPU) before running at full speed"
            )
        pred.notes = notes
        # a result made with random weights says so in its --json "warnings" too, not only on stderr
        pred.warnings = [n for n in notes if RANDOM_WEIGHTS in n]
        return pred

    # -- facts ---------------------------------------------------------------------------
    @property
    def num_paths(self) -> int:
        return self.model.num_paths

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.model.input_size)  # type: ignore[return-value]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loaded.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        return self.loaded.palette

    @property
    def name(self) -> str:
        return self.loaded.preset

    @property
    def compiled(self) -> bool:
        """Whether steps go through torch.compile (one graph per path and memory length)."""
        return self._compiled is not None

    # -- streams ---------------------------------------------------------------------------
    def new_stream(self, batch: int = 1, first_path: int = 0) -> Stream:
        """A fresh stream whose first frame runs path ``first_path`` (TDNet runs path
        ``(first_path + i) mod N`` on frame i), e.g. to score every path on one frame."""
        state = self.model.new_state(batch)
        if first_path:
            state = replace(state, frame_index=first_path % self.num_paths)
        return Stream(state=state, batch=batch, _initial=state)

    def reset(self, stream: Stream) -> None:
        stream.reset()

    # -- the work ----------------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> normalised (B, 3, h, w) float at the model input size."""
        h, w = self.input_size
        if self.device.type == "cpu":  # resize, then one table lookup per frame
            x = np.empty((len(frames), h, w, 3), np.float32)
            for f, dst in zip(frames, x):
                if f.shape[:2] != (h, w):
                    f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
                cv2.LUT(np.ascontiguousarray(f), self._norm_table, dst=dst)
            x = torch.from_numpy(x).permute(0, 3, 1, 2)  # (B, 3, h, w) with channels_last strides
            return x if self.channels_last else x.contiguous()
        # Upload uint8 (a quarter of the bytes), resize and normalise on the device.
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).clamp_(0, 255).round_()
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self):
        """The precision every model call runs at: autocast for bf16/fp16, no TF32 for CUDA fp32."""
        if self._tf32_off:
            return _TF32_OFF
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def step(self, x: torch.Tensor, stream: Stream) -> torch.Tensor:
        """Advance ``stream`` by one normalised frame batch; returns feature-size float logits."""
        with torch.inference_mode(), self._autocast():
            if self._compiled is None:
                logits, stream.state = self.model.step(x, stream.state)
            else:
                path = self.model.next_path(stream.state)
                fn = self._compiled.get(path)
                if fn is None:
                    fn = self._compiled[path] = torch.compile(
                        functools.partial(self.model.step_tensors, path=path), dynamic=False, mode=self._compile_mode
                    )
                with self._compile_config():
                    logits, memory = fn(x, stream.state.memories)
                if self._compile_mode in _CUDA_GRAPH_MODES:
                    # A CUDA graph's outputs live in a pool that the next replay of any path may
                    # overwrite, but the stream holds this frame's memory for N-1 more steps and
                    # the caller its logits: copy both out (small, against a whole step).
                    logits = logits.clone()
                    memory = None if memory is None else Memory(*(t.clone() for t in memory))  # per-frame models: None
                stream.state = self.model.advance(stream.state, memory, x.shape[0])
        stream.frames += 1
        return logits.float()

    def _compile_config(self):
        """Inductor settings for compiling (and any recompile of) a path's step.

        On the CPU, freezing treats the weights as constants: oneDNN gets pre-packed weights
        and convolutions fused with their adds and ReLUs (td4-psp18: 2.41 s against 2.58 s
        compiled without it and 2.75 s eager, one thread). Not yet measured on CUDA, so off there.
        """
        if self.device.type != "cpu":
            return contextlib.nullcontext()
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        stack = contextlib.ExitStack()
        stack.enter_context(inductor_config.patch(freezing=True))
        if self.winograd:
            # Each Winograd layer breaks the graph, so every residual block between two of them
            # is compiled on its own: more than dynamo's default 8 per function (then it would
            # warn and run the rest eagerly).
            limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
            stack.enter_context(dynamo_config.patch(**{limit: 64}))
        return stack

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """:meth:`preprocess`, timed as the "preprocess" stage. Keeps no state, so a pipeline
        can run it on its reader thread while the model works on the previous frame."""
        t0 = time.perf_counter()
        x = self.preprocess(_as_batch(frames))
        self._add_stage("preprocess", self._mark() - t0)
        return x

    def logits(self, frames: np.ndarray | torch.Tensor, stream: Stream) -> torch.Tensor:
        """Feature-size logits (B, C, h, w) for the next frame(s) of ``stream``: uint8 RGB
        frames, or a batch already made by :meth:`prepare`."""
        x = frames if isinstance(frames, torch.Tensor) else self.prepare(frames)
        t1 = time.perf_counter()
        out = self.step(x, stream)
        self._add_stage("model", self._mark() - t1)
        return out

    @property
    def encodes_ahead(self) -> bool:
        """Whether a pipeline may run :meth:`encode` for later frames on other threads while
        :meth:`finish` completes earlier ones. TDNet on the CPU, eager only: a compiled step
        is one graph, and on a GPU the frames would queue on one device anyway."""
        return (
            self.encode_ahead and isinstance(self.model, TDNet) and self.device.type == "cpu" and self._compiled is None
        )

    def encode(self, x: torch.Tensor, path: int) -> Encoded:
        """The state-free part of a step (the path's backbone, pyramid and projections) for a
        batch made by :meth:`prepare`. It runs about 80% of a td4 step's work, and any
        number of frames can be encoded at once, on any threads; :meth:`finish` then applies
        the stream's memory in frame order. ``encode`` + ``finish`` = :meth:`step`."""
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            values, queries, memory, _ = self.model.encode(x, path)
        self._add_stage("model", self._mark() - t0)
        return Encoded(path, values, queries, memory, x.shape[0])

    def finish(self, encoded: Encoded, stream: Stream) -> torch.Tensor:
        """Feature-size logits of an encoded frame: propagate ``stream``'s memory to it,
        decode, and advance the stream. Frames must come in order."""
        path = self.model.next_path(stream.state)
        if encoded.path != path:
            raise TdnetError(f"a frame encoded for path {encoded.path} reached a stream at path {path}")
        t0 = time.perf_counter()
        with torch.inference_mode(), self._autocast():
            fused = self.model.fuse(encoded.values, encoded.queries, stream.state.memories, path)
            logits = self.model.decode(fused, path)
        stream.state = self.model.advance(stream.state, encoded.memory, encoded.batch)
        stream.frames += 1
        self._add_stage("model", self._mark() - t0)
        return logits.float()

    def _add_stage(self, name: str, seconds: float) -> None:
        with self._stage_lock:
            self.stage_seconds[name] += seconds

    def to_labels(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """Train-id labels (B, H, W) uint8 of feature-size logits resized to ``size``.

        Separate from :meth:`logits` so a pipeline can run it on another thread, beside the
        next frame's model step (it keeps no state)."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = upsample_argmax(logits, size).cpu().numpy()
        self._add_stage("postprocess", time.perf_counter() - t0)
        return out

    def segment(self, frames: np.ndarray, stream: Stream, *, size: tuple[int, int] | None = None) -> np.ndarray:
        """Train-id labels uint8 at the frame's own size (or ``size``); (H, W) or (B, H, W)."""
        single = frames.ndim == 3
        batch = _as_batch(frames)
        out = self.to_labels(self.logits(batch, stream), size or batch.shape[1:3])
        return out[0] if single else out

    def _mark(self) -> float:
        if self.sync_stages and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class _TF32Off:
    """TF32 off inside, the flags as they were after. They are process-wide and pipelines run
    model stages on several threads at once, so the first to enter saves them and the last to
    leave restores them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = (False, False)

    def __enter__(self) -> None:
        with self._lock:
            if self._inside == 0:
                self._saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            self._inside += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self._saved


_TF32_OFF = _TF32Off()


def _as_batch(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise UsageError(f"expected uint8 RGB frames (H, W, 3) or (B, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames[None] if frames.ndim == 3 else frames
