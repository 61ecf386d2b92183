"""Video and frame IO: streaming readers (ffmpeg, frame folders), scene cuts and crash-safe writers."""

from tdnet_cli.video.color import YUV420
from tdnet_cli.video.cuts import CutDetector
from tdnet_cli.video.ffmpeg import ffmpeg_exe
from tdnet_cli.video.folder import FrameFolderReader, ImageSequenceReader, to_rgb8
from tdnet_cli.video.frames import (
    DEFAULT_FOLDER_FPS,
    IMAGE_EXTENSIONS,
    IMAGE_OUTPUT_KINDS,
    Frame,
    FrameSource,
    SourceInfo,
    is_camera,
    is_image_output,
    is_live,
    is_stdin,
    is_stream_spec,
    is_url,
    natural_key,
)
from tdnet_cli.video.png_writer import PngFilesWriter, PngSequenceWriter
from tdnet_cli.video.reader import VideoReader, open_source
from tdnet_cli.video.writer import (
    ENCODERS,
    VIDEO_SUFFIXES,
    X264_PRESETS,
    Encoding,
    VideoWriter,
    check_encoding,
    encoded_size,
)

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "ENCODERS",
    "IMAGE_EXTENSIONS",
    "IMAGE_OUTPUT_KINDS",
    "VIDEO_SUFFIXES",
    "X264_PRESETS",
    "YUV420",
    "CutDetector",
    "Encoding",
    "Frame",
    "FrameFolderReader",
    "FrameSource",
    "ImageSequenceReader",
    "PngFilesWriter",
    "PngSequenceWriter",
    "SourceInfo",
    "VideoReader",
    "VideoWriter",
    "check_encoding",
    "encoded_size",
    "ffmpeg_exe",
    "is_camera",
    "is_image_output",
    "is_live",
    "is_stdin",
    "is_stream_spec",
    "is_url",
    "natural_key",
    "open_source",
    "to_rgb8",
]
