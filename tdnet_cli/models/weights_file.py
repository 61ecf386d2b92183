"""What a weights file holds, read safely: ``torch.load(..., weights_only=True)`` or one
CheckpointError that says what the file is (empty, text, an LFS pointer, a truncated or foreign
zip, a pickle that needs code to load) and how to get a good one. A weights "file" may be an
http(s) URL: it is downloaded into the cache (tdnet_cli/download.py) and read the same way."""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tdnet_cli.download import fetch, is_url, split_digest
from tdnet_cli.errors import CheckpointError, few, first_line

__all__ = ["FORMAT", "FORMAT_VERSION", "load_named", "load_payload", "locate", "read_state_dict", "unwrap_payload"]

FORMAT = "tdnet-checkpoint"  # the "format" key of the files save_checkpoint writes
FORMAT_VERSION = 1

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # older torch.save (pickled magic number)
_OTHER_FORMATS = {  # leading bytes of files people pass by mistake -> what they are
    b"\x93NUMPY": "a NumPy array (.npy)",
    b"\x89HDF": "an HDF5 file (Keras/TensorFlow weights?)",
    b"\x1f\x8b": "a gzip archive",
    b"\xfd7zXZ": "an xz archive",
    b"BZh": "a bzip2 archive",
    b"\x7fELF": "a program (ELF executable)",
    b"%PDF": "a PDF document",
}


def load_payload(path: Path, source: str = "the path", *, name: str | None = None) -> Any:
    """What ``torch.load(weights_only=True)`` reads, or one CheckpointError saying what the file is.

    ``source`` is what the user passed the path as ("the --weights path", "model.init"): the hint
    for a missing file names it, so it never points at an option the user did not use. ``name``
    is what messages call the file (the URL of a download), the path itself by default."""
    name = name or str(path)
    if not path.exists():
        raise CheckpointError(f"weights file not found: {name}", hint=f"check {source}")
    if path.is_dir():
        raise CheckpointError(f"{name} is a folder, not a weights file", hint="pass the .pt or .pkl file")
    with open(path, "rb") as f:  # an unreadable file is an OSError: one line from handle_errors
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{name} is empty (0 bytes), not a checkpoint", hint="download the weights again")
    if not head.startswith((_ZIP_MAGIC, _LEGACY_MAGIC)):
        raise CheckpointError(
            f"{name} is not a PyTorch checkpoint: it is {_what_is(head)}",
            hint="pass the .pt or .pkl file written by torch.save",
        )
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols would be a second line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{name} needs code to unpickle (it refers to the Python object {found.group(1)}); "
                "refusing to unpickle it: tdnet loads tensors only, never code from a weights file",
                hint="if you trust it, load it in Python and re-save its tensors: "
                "torch.save(obj.state_dict(), 'plain.pt')",
            ) from None
        raise CheckpointError(
            f"{name} is damaged: its pickled data is corrupt ({first_line(exc, 120)})",
            hint="download the weights again",
        ) from None
    except EOFError:
        raise CheckpointError(
            f"{name} is truncated: the file ends before the checkpoint does ({path.stat().st_size} bytes)",
            hint="download the weights again",
        ) from None
    except (RuntimeError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as exc:
        names = _zip_names(path) if head.startswith(_ZIP_MAGIC) else []
        if names is None:
            raise CheckpointError(
                f"{name} is truncated: a zip archive without its end (central directory), {path.stat().st_size} bytes",
                hint="download the weights again",
            ) from None
        if names and not any(n.endswith("data.pkl") for n in names):
            raise CheckpointError(
                f"{name} is a zip archive that torch.save did not write (it holds {few(names)})",
                hint="unpack it and pass the .pt or .pkl file inside",
            ) from None
        raise CheckpointError(
            f"{name} is damaged or not written by torch.save ({first_line(exc, 120)})",
            hint="download the weights again",
        ) from None


def _zip_names(path: Path) -> list[str] | None:
    """The names in a zip file, or None if it has no central directory (a cut-off download)."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


def _what_is(head: bytes) -> str:
    """A few words on what a non-checkpoint file holds, from its first bytes."""
    for magic, what in _OTHER_FORMATS.items():
        if head.startswith(magic):
            return what
    if head.startswith(b"\x80"):  # pickle protocol 2+
        return "a Python pickle that torch.save did not write"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8") if exc.start > len(head) - 4 else None
    if text is not None and all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        if text.startswith("version https://git-lfs"):
            return "a Git LFS pointer, not the weights (run `git lfs pull`)"
        if text.lstrip().lower().startswith(("<!doctype html", "<html")):
            return "an HTML page (the download saved a web page, not the file)"
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file (it starts with {first!r})"
    return f"unknown binary data (not a zip archive or a pickle; it starts with {head[:8].hex(' ')})"


def unwrap_payload(obj: Any, path: str | Path) -> tuple[dict, dict | None]:
    """Return (state_dict, our metadata or None) from whatever the file holds (``path``: its name in messages)."""
    meta = None
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        meta = dict(obj)
        obj = meta.get("state_dict")
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"{path}: a tdnet checkpoint without its tensors ('state_dict' is missing)",
                hint="download or export the checkpoint again",
            )
    elif isinstance(obj, Mapping):
        for key in ("state_dict", "model_state", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors", hint="pass a TDNet or PSPNet checkpoint")
    sd = {str(k).removeprefix("module."): v for k, v in obj.items()}
    _check_finite(sd, path)
    return sd, meta


def _check_finite(sd: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Refuse NaN or infinite weights: they turn every prediction into one class, silently."""
    for key, t in sd.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            what = " and ".join(s for s in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if s)
            raise CheckpointError(
                f"{path}: tensor {key} holds {what} value(s) of {t.numel()}; "
                "the weights are broken (a diverged training run?)",
                hint="use an earlier or another checkpoint",
            )


def locate(spec: str | os.PathLike) -> tuple[Path, str]:
    """(the local file, the name messages give it) of a path, or of an http(s) URL, which is
    downloaded into the cache the first time (:mod:`tdnet_cli.download`)."""
    if is_url(spec):
        url = str(spec)
        return fetch(url), split_digest(url)[0]
    return Path(spec), str(spec)


def load_named(spec: str | os.PathLike, source: str = "the path") -> tuple[Any, str]:
    """:func:`load_payload` of a path or URL, and the name messages give it. A download that
    is not a checkpoint (an HTML page, a truncated file) leaves the cache: the next run fetches it anew."""
    path, name = locate(spec)
    try:
        return load_payload(path, source, name=name), name
    except CheckpointError as exc:
        if name == str(path):
            raise
        path.unlink(missing_ok=True)
        if "drive.google.com" in name:  # its links give programs a page, and the authors' files are a zip
            raise CheckpointError(
                exc.message, hint="download it in a browser, unpack it and pass the .pkl file (see weights/README.md)"
            ) from None
        raise


def read_state_dict(path: str | os.PathLike, source: str = "the path") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (ours or raw) or URL, prefix ``module.`` stripped;
    ``source``: as for :func:`load_payload`."""
    payload, name = load_named(path, source)
    return unwrap_payload(payload, name)[0]
