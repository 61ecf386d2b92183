"""Weights named by an http(s) URL: downloaded once into the cache, then read as a local file.

The cache is ``$TDNET_CACHE``, else ``$XDG_CACHE_HOME/tdnet``, else ``~/.cache/tdnet``
(:func:`cache_dir`, the one place that rule lives). A URL's file is
``weights/<16 hex of the URL's sha256>-<its basename>``: two URLs never share a file, and a file
found there is used without touching the network. A download goes to ``<name>.partial`` and
is renamed when complete, so a file under the final name is always whole; an interrupted one
continues from where it stopped (an HTTP Range request) when the server allows it. A
``#sha256=<hex>`` fragment is checked before the rename. Standard library only: the CLI shows
progress through :func:`reporting`, and nothing here imports rich or typer.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from tdnet_cli import __version__
from tdnet_cli.errors import CheckpointError, UsageError

__all__ = ["ProgressFn", "cache_dir", "cached_path", "fetch", "is_url", "reporting", "split_digest"]

ProgressFn = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None when unknown)
ReporterFn = Callable[[str], AbstractContextManager[ProgressFn]]  # URL -> a context giving the progress callback

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_DIGEST = re.compile(r"sha256=([0-9A-Fa-f]*)")
_CHUNK = 1 << 20
_TIMEOUT = 60.0  # seconds without a byte before a download counts as stalled
_REPORTER: contextvars.ContextVar[ReporterFn | None] = contextvars.ContextVar("tdnet_download_reporter", default=None)


def is_url(spec: object) -> bool:
    """True for a ``scheme://...`` string (any scheme: :func:`fetch` refuses those it cannot read)."""
    return isinstance(spec, str) and bool(_SCHEME.match(spec))


def cache_dir() -> Path:
    """Where downloads are kept: $TDNET_CACHE, else $XDG_CACHE_HOME/tdnet, else ~/.cache/tdnet."""
    if own := os.environ.get("TDNET_CACHE"):
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "tdnet"


def split_digest(url: str) -> tuple[str, str | None]:
    """(the URL without its fragment, the expected sha256 from ``#sha256=<hex>`` or None)."""
    clean, _, fragment = url.partition("#")
    found = _DIGEST.fullmatch(fragment)
    if not found:
        return clean, None
    digest = found.group(1).lower()
    if len(digest) != 64:
        raise UsageError(
            f"#sha256= in {url} holds {len(digest)} hex digits, not 64", hint="give the file's full sha256 digest"
        )
    return clean, digest


def cached_path(url: str) -> Path:
    """The cache file of ``url`` (its fragment left out: the same file with or without a digest)."""
    clean, _ = split_digest(url)
    key = hashlib.sha256(clean.encode("utf-8")).hexdigest()[:16]
    base = urllib.parse.unquote(urllib.parse.urlsplit(clean).path.rstrip("/").rsplit("/", 1)[-1])
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")[:80] or "download"
    return cache_dir() / "weights" / f"{key}-{safe}"


@contextlib.contextmanager
def reporting(reporter: ReporterFn) -> Iterator[None]:
    """While inside, downloads started by :func:`fetch` without their own callback report
    through ``reporter(url)`` (the CLI's progress bar)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def fetch(url: str, *, progress: ProgressFn | None = None) -> Path:
    """The local file of an http(s) ``url``: the cached copy, else downloaded (resumed if a
    ``.partial`` is there) and checked against ``#sha256=`` if given. One CheckpointError or
    UsageError line for what the user can fix (404, no such host, refused, a wrong digest)."""
    scheme = _SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() not in ("http", "https"):
        what = scheme.group(1) if scheme else "no"
        raise UsageError(
            f"cannot download {url}: {what} scheme, only http:// and https:// URLs are downloaded",
            hint="download the file yourself and pass its path",
        )
    clean, digest = split_digest(url)
    final = cached_path(url)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot make the download cache {final.parent}: {exc.strerror or exc}",
            hint="set TDNET_CACHE to a writable folder",
        ) from None
    with _locked(final):  # two processes (torchrun ranks) fetching one URL: one downloads
        if final.is_file():
            if digest is None or _sha256(final) == digest:
                return final
            final.unlink()  # a stale copy: the URL's file changed since; fetch it again
        partial = final.with_name(final.name + ".partial")
        reporter = _REPORTER.get()
        if progress is not None or reporter is None:
            _download(clean, partial, progress)
        else:
            with reporter(clean) as shown:
                _download(clean, partial, shown)
        if digest is not None and (got := _sha256(partial)) != digest:
            partial.unlink()
            raise CheckpointError(
                f"{clean}: the download's sha256 is {got}, the URL's #sha256= says {digest}; nothing was kept",
                hint="check the digest, or whether the file on the server changed",
            )
        os.replace(partial, final)
    return final


def _download(url: str, partial: Path, progress: ProgressFn | None) -> None:
    """Bring ``partial`` to the whole file: from its current size where the server answers a
    Range request with 206, else from the start."""
    have = partial.stat().st_size if partial.is_file() else 0
    response = _open(url, have)
    start = _resume_offset(response, have)
    if start is None:  # a 206 for another range than asked: ask for the whole file
        response.close()
        response, start = _open(url, 0), 0
    with response:
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        done = start
        with open(partial, "r+b" if start else "wb") as f:  # a file that cannot be written: handle_errors' line
            f.truncate(start)
            f.seek(start)
            if progress is not None:
                progress(done, total)
            while chunk := _read(response, url, done, total):
                f.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    if total is not None and done < total:
        raise CheckpointError(
            f"the download of {url} stopped at {done} of {total} bytes",
            hint="run the command again to resume it",
        )


def _open(url: str, offset: int):
    """The server's response for ``url`` from byte ``offset``; one line for every refusal."""
    import urllib.error  # here, not at the top: every command imports this module, few download
    import urllib.request

    headers = {"User-Agent": f"tdnet/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the partial is not a prefix of the file any more: start over
            return _open(url, 0)
        hint = "check the URL" if exc.code in (401, 403, 404, 410) else "try again later"
        raise CheckpointError(f"cannot download {url}: HTTP {exc.code} {exc.reason}", hint=hint) from None
    except urllib.error.URLError as exc:
        raise CheckpointError(f"cannot download {url}: {_why(exc.reason)}", hint=_hint(exc.reason)) from None
    except (TimeoutError, OSError) as exc:  # a timeout or a reset before the headers
        raise CheckpointError(f"cannot download {url}: {_why(exc)}", hint="check the network and try again") from None


def _resume_offset(response, have: int) -> int | None:
    """Where the body starts: ``have`` when the server sent the rest (206), 0 for the whole
    file (200: no Range support), None for a 206 that does not start at ``have``."""
    if response.status != 206:
        return 0
    found = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return have if have and found and int(found.group(1)) == have else None


def _read(response, url: str, done: int, total: int | None) -> bytes:
    """The next chunk; a connection lost mid-file keeps the partial for a resume."""
    import http.client

    try:
        return response.read(_CHUNK)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        of = f" of {total}" if total is not None else ""
        raise CheckpointError(
            f"the download of {url} broke off at {done}{of} bytes: {_why(exc)}",
            hint="run the command again to resume it",
        ) from None


def _why(reason: object) -> str:
    """A network failure in a few words."""
    if isinstance(reason, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _hint(reason: object) -> str:
    if isinstance(reason, socket.gaierror):
        return "check the URL's host name and the network"
    if isinstance(reason, ConnectionRefusedError):
        return "check the URL's host and port"
    return "check the URL and the network"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(final: Path) -> Iterator[None]:
    """An exclusive lock on ``<final>.lock`` where the system has flock (POSIX), else none."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the user's to arrange
        yield
        return
    with open(final.with_name(final.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
