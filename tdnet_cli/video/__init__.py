"""Video and frame IO: streaming readers (ffmpeg, frame folders) and crash-safe writers."""

from tdnet_cli.video.color import YUV420
from tdnet_cli.video.reader import (
    IMAGE_EXTENSIONS,
    Frame,
    FrameFolderReader,
    FrameSource,
    SourceInfo,
    VideoReader,
    ffmpeg_exe,
    is_url,
    natural_key,
    open_source,
    to_rgb8,
)
from tdnet_cli.video.writer import (
    ENCODERS,
    VIDEO_SUFFIXES,
    X264_PRESETS,
    Encoding,
    PngSequenceWriter,
    VideoWriter,
    check_encoding,
    encoded_size,
    partial_path,
)

__all__ = [
    "ENCODERS",
    "Encoding",
    "IMAGE_EXTENSIONS",
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameFolderReader",
    "FrameSource",
    "PngSequenceWriter",
    "SourceInfo",
    "VideoReader",
    "VideoWriter",
    "X264_PRESETS",
    "YUV420",
    "check_encoding",
    "encoded_size",
    "ffmpeg_exe",
    "is_url",
    "natural_key",
    "open_source",
    "partial_path",
    "to_rgb8",
]
