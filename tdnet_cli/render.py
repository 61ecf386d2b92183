"""What `segment` draws: colour maps, overlays (with an optional legend) and label-id maps.

Runs in the pipeline's writer thread; knows writers and frames, nothing of models.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from tdnet_cli.consistency import ConsistencyMeter
from tdnet_cli.data.cityscapes import IGNORE_INDEX, palette_lut, train_id_to_label_id
from tdnet_cli.video import CutDetector, Frame, PngFilesWriter, PngSequenceWriter, VideoWriter
from tdnet_cli.video.color import YUV420, rgb_to_i420, rgb_to_yuv

__all__ = ["ConsistencyTap", "Renderer"]

# a legend's (classes present, row height, font scale, padding, box width, box height)
_Layout = tuple[list[int], int, float, int, int, int]


def _font_rows(height: int) -> tuple[int, float]:
    row = max(10, height // 36)
    return row, row / 28.0


class Renderer:
    """Turns (frame, labels) into every requested output, in the writer thread.

    Split in two so the pure computation (:meth:`prepare`: colourise, blend, YUV
    conversion) can run on several threads where cores are spare, while :meth:`emit`
    hands the results to the writers in frame order.

    Video outputs are made in YUV 4:2:0, the encoder's own format: the overlay of a YUV
    frame is blended on its planes (the palette converted once to the writer's colour
    matrix; chroma takes the label of each 2x2 block's top-left pixel), and the colour map
    is three table lookups. Only RGB frames (folders, odd sizes) take the RGB route.
    """

    def __init__(
        self,
        writers: dict[str, VideoWriter | PngSequenceWriter | PngFilesWriter],
        palette: Sequence[tuple[int, int, int]],
        classes: Sequence[str],
        alpha: float,
        legend: bool,
    ) -> None:
        self.writers = writers
        self.lut = palette_lut(palette)
        # one single-channel table per colour plane: cv2.LUT + cv2.merge is ~15x numpy fancy indexing
        self.lut_r, self.lut_g, self.lut_b = (np.ascontiguousarray(self.lut[:, c]) for c in range(3))
        self._yuv_luts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.palette = [tuple(int(v) for v in c) for c in palette]
        self.classes = list(classes)
        self.alpha = alpha
        self.legend = legend

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        self.emit(frame, labels, self.prepare(frame, labels))

    def prepare(self, frame: Frame, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Compute every output image of one frame (no IO; safe to run concurrently)."""
        w = self.writers
        done: dict[str, np.ndarray] = {}
        overlay, color = w.get("overlay"), w.get("color")
        if isinstance(overlay, VideoWriter):
            yuv = frame.yuv
            if yuv is not None and yuv.matrix == overlay.matrix and self._planar(overlay):
                done["overlay"] = self._overlay_yuv(yuv, labels, overlay.matrix)
            else:
                done["overlay"] = overlay.prepare(self._overlay_rgb(frame.image, labels))
        elif overlay is not None:  # a PNG per image (image inputs): BGR, what PNG writing takes
            done["overlay"] = cv2.cvtColor(self._overlay_rgb(frame.image, labels), cv2.COLOR_RGB2BGR)
        if isinstance(color, VideoWriter):
            if not color.lossless and self._planar(color):
                done["color"] = self._labels_yuv(labels, color.matrix)
            else:
                done["color"] = color.prepare(self._colorize(labels))
        elif color is not None:
            done["color"] = cv2.merge(
                (cv2.LUT(labels, self.lut_b), cv2.LUT(labels, self.lut_g), cv2.LUT(labels, self.lut_r))
            )  # BGR: what PNG writing takes
        if "labelids" in w:
            done["labelids"] = train_id_to_label_id(labels)
        return done

    def emit(self, frame: Frame, labels: np.ndarray, done: dict[str, np.ndarray]) -> None:
        """Hand one frame's outputs to the writers (call in frame order)."""
        for kind, writer in self.writers.items():
            if isinstance(writer, VideoWriter):
                writer.write_prepared(done[kind])
            else:
                writer.write(frame.name, labels if kind == "labels" else done[kind])

    # -- RGB -------------------------------------------------------------------------
    def _colorize(self, labels: np.ndarray) -> np.ndarray:
        return cv2.merge((cv2.LUT(labels, self.lut_r), cv2.LUT(labels, self.lut_g), cv2.LUT(labels, self.lut_b)))

    def _overlay_rgb(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = cv2.addWeighted(image, 1.0 - self.alpha, self._colorize(labels), self.alpha, 0.0)
        ignore = cv2.compare(labels, IGNORE_INDEX, cv2.CMP_EQ)
        if cv2.countNonZero(ignore):
            cv2.copyTo(image, ignore, out)  # ignored pixels show the frame unblended
        if self.legend:
            self._draw_legend(out, labels)
        return out

    # -- YUV 4:2:0 -------------------------------------------------------------------
    @staticmethod
    def _planar(writer: VideoWriter) -> bool:
        """Whether frames for ``writer`` can be made in YUV directly (4:2:0 needs even sides)."""
        return not (writer.width & 1 or writer.height & 1)

    def _luts_for(self, matrix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if matrix not in self._yuv_luts:  # a dict write of a finished value: safe across render threads
            yuv = rgb_to_yuv(self.lut, matrix)
            self._yuv_luts[matrix] = tuple(np.ascontiguousarray(yuv[:, c]) for c in range(3))
        return self._yuv_luts[matrix]

    def _labels_yuv(self, labels: np.ndarray, matrix: str) -> np.ndarray:
        ly, lu, lv = self._luts_for(matrix)
        out = YUV420.empty(*labels.shape, matrix)
        sub = np.ascontiguousarray(labels[::2, ::2])
        cv2.LUT(labels, ly, dst=out.y)
        cv2.LUT(sub, lu, dst=out.u)
        cv2.LUT(sub, lv, dst=out.v)
        return out.data

    def _overlay_yuv(self, frame: YUV420, labels: np.ndarray, matrix: str) -> np.ndarray:
        a = self.alpha
        ly, lu, lv = self._luts_for(matrix)
        out = YUV420.empty(*labels.shape, matrix)
        sub = np.ascontiguousarray(labels[::2, ::2])
        cv2.addWeighted(frame.y, 1.0 - a, cv2.LUT(labels, ly), a, 0.0, dst=out.y)
        cv2.addWeighted(frame.u, 1.0 - a, cv2.LUT(sub, lu), a, 0.0, dst=out.u)
        cv2.addWeighted(frame.v, 1.0 - a, cv2.LUT(sub, lv), a, 0.0, dst=out.v)
        ignore = cv2.compare(labels, IGNORE_INDEX, cv2.CMP_EQ)
        if cv2.countNonZero(ignore):  # ignored pixels show the frame unblended
            cv2.copyTo(frame.y, ignore, out.y)
            ignore_sub = np.ascontiguousarray(ignore[::2, ::2])
            cv2.copyTo(frame.u, ignore_sub, out.u)
            cv2.copyTo(frame.v, ignore_sub, out.v)
        if self.legend:
            self._draw_legend_yuv(out, labels)
        return out.data

    # -- legend ----------------------------------------------------------------------
    def _legend_layout(self, labels: np.ndarray, image_height: int) -> _Layout | None:
        """(classes present, row height, font scale, padding, box width, box height), or None."""
        counts = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()
        present = [i for i in range(min(len(self.classes), len(self.palette))) if counts[i] > 0]
        if not present:
            return None
        row, scale = _font_rows(image_height)
        pad = max(2, row // 4)
        width = (
            pad * 3
            + row
            + max(cv2.getTextSize(self.classes[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for i in present)
        )
        height = pad + len(present) * (row + pad)
        return present, row, scale, pad, width, height

    def _draw_legend(self, image: np.ndarray, labels: np.ndarray, layout: _Layout | None = None) -> None:
        """Swatch (framed in white) + name of each class present in this frame, top-left, on a dimmed box."""
        layout = layout or self._legend_layout(labels, image.shape[0])
        if layout is None:
            return
        present, row, scale, pad, width, height = layout
        box = image[:height, :width]
        box[:] = (box.astype(np.uint16) * 2 // 5).astype(np.uint8)  # dim the background for legibility
        edge = max(1, row // 10)
        for k, i in enumerate(present):
            y = pad + k * (row + pad)
            # each swatch sits in a white frame: dark classes (bus, train, truck) would vanish on the dim box
            cv2.rectangle(image, (pad, y), (pad + row - 1, y + row - 1), (255, 255, 255), thickness=-1)
            inner = ((pad + edge, y + edge), (pad + row - 1 - edge, y + row - 1 - edge))
            cv2.rectangle(image, *inner, self.palette[i], thickness=-1)
            cv2.putText(
                image,
                self.classes[i],
                (2 * pad + row, y + row - max(1, row // 6)),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )

    def _draw_legend_yuv(self, frame: YUV420, labels: np.ndarray) -> None:
        """The legend on YUV planes: its corner is converted to RGB, drawn on, and converted back."""
        layout = self._legend_layout(labels, frame.height)
        if layout is None:
            return
        bh, bw = min(frame.height, layout[5] + (layout[5] & 1)), min(frame.width, layout[4] + (layout[4] & 1))
        corner = (frame.y[:bh, :bw], frame.u[: bh // 2, : bw // 2], frame.v[: bh // 2, : bw // 2])
        rgb = YUV420.from_planes(*corner, frame.matrix).to_rgb()
        self._draw_legend(rgb, labels, layout)
        drawn = YUV420(rgb_to_i420(rgb, frame.matrix).reshape(-1), bh, bw, frame.matrix)
        for plane, new in zip(corner, (drawn.y, drawn.u, drawn.v)):
            plane[:] = new


class ConsistencyTap:
    """A :class:`Renderer` that also scores the temporal consistency of the labels it writes
    (`segment --consistency`). Runs in the writer thread, in frame order, so the model stage
    does not wait for the flow. A hard scene cut (the same :class:`CutDetector` decisions the
    model loop makes, on the same frames) starts a new pair chain, as the model's memory does."""

    def __init__(self, render: Renderer, meter: ConsistencyMeter, cuts: CutDetector | None) -> None:
        self.render, self.meter, self.cuts = render, meter, cuts
        self.seconds = 0.0  # time spent scoring, for the report
        self._size: tuple[int, int] | None = None

    def __call__(self, frame: Frame, labels: np.ndarray) -> None:
        self.emit(frame, labels, self.prepare(frame, labels))

    def prepare(self, frame: Frame, labels: np.ndarray) -> dict[str, np.ndarray]:
        return self.render.prepare(frame, labels)

    def emit(self, frame: Frame, labels: np.ndarray, done: dict[str, np.ndarray]) -> None:
        t0 = time.perf_counter()
        cut = self.cuts is not None and self.cuts(frame)
        if cut or (self._size is not None and frame.size != self._size):  # as the model loop decides
            self.meter.reset()
        self._size = frame.size
        # a video frame's luma plane is the grey image the flow wants: no RGB conversion
        self.meter.update(frame.yuv.y if frame.yuv is not None else frame.image, labels)
        self.seconds += time.perf_counter() - t0
        self.render.emit(frame, labels, done)
