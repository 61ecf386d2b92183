"""Issue 25 item 4: weights named by an http(s) URL (`--weights`, `inspect`, `model.init`) are
downloaded once into the cache ($TDNET_CACHE here), atomically, resumably, checked against an
optional ``#sha256=``, then read by the same safe loader as a local file. A loopback server
started by the test serves them; every failure a user can cause is one line and exit 2."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from faults import assert_one_error, cli
from media import make_clip

from tdnet_cli.download import cached_path, fetch
from tdnet_cli.models.checkpoint import random_model, save_checkpoint

PRESET = "td4-tiny"


class Server:
    """What the handler serves and what it saw: path -> bytes, and one (method, path, Range) per request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.ranges = True  # answer Range requests with 206 (else the whole file, 200)
        self.cut_once: set[str] = set()  # paths whose next answer stops after half the body
        self.url = ""

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each GET of ``path``."""
        return [r for m, p, r in self.requests if m == "GET" and p == path]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            server.requests.append(("GET", self.path, asked))
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = int(m.group(1)) if asked and server.ranges and (m := re.match(r"bytes=(\d+)-$", asked)) else 0
            if start >= len(body) and start:
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
            self.end_headers()
            part = body[start:]
            if self.path in server.cut_once:  # a connection lost mid-file
                server.cut_once.discard(self.path)
                part = part[: len(part) // 2]
                self.close_connection = True
            self.wfile.write(part)

        def log_message(self, *args) -> None:  # quiet: pytest shows stderr on failures only
            pass

    return Handler


@pytest.fixture
def server():
    """A loopback HTTP server on a free port, in a thread, for one test."""
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    return save_checkpoint(tmp_path_factory.mktemp("w") / "m.pt", random_model(PRESET)).read_bytes()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every download of these tests goes under tmp_path, never into the real home."""
    monkeypatch.setenv("TDNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _kept(cache: Path) -> list[str]:
    """The files under the cache's final names (no lock, no partial)."""
    folder = cache / "weights"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith((".lock", ".partial")))


@pytest.mark.slow
def test_inspect_url_downloads_once_then_uses_the_cache(server, cache, weights_bytes, runner):
    server.files["/models/m.pt"] = weights_bytes
    url = f"{server.url}/models/m.pt"
    for _ in range(2):
        result = cli("inspect", url, "--json")
        assert result.exit_code == 0, result.output
        assert f'"path": "{url}"' in result.stdout and f'"preset": "{PRESET}"' in result.stdout
    assert server.gets("/models/m.pt") == [None], "the second run went to the network"
    (kept,) = _kept(cache)
    assert kept.endswith("-m.pt") and (cache / "weights" / kept).read_bytes() == weights_bytes


@pytest.mark.slow
def test_segment_with_weights_url(server, tmp_path, weights_bytes):
    server.files["/m.pt"] = weights_bytes
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    result = cli("segment", clip, "--weights", f"{server.url}/m.pt", "-s", "labels", "-d", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "clip.labels").glob("*.png")) == ["000000.png", "000001.png"]


def test_two_urls_of_one_name_never_share_a_file(server, cache, weights_bytes):
    other = save_checkpoint(cache.parent / "o.pt", random_model("psp-tiny")).read_bytes()
    server.files["/a/m.pt"], server.files["/b/m.pt"] = weights_bytes, other
    a, b = fetch(f"{server.url}/a/m.pt"), fetch(f"{server.url}/b/m.pt")
    assert a != b and a.read_bytes() == weights_bytes and b.read_bytes() == other


def test_http_404_is_one_line_and_keeps_nothing(server, cache):
    url = f"{server.url}/missing.pt"
    assert_one_error(cli("inspect", url), 2, f"cannot download {url}: HTTP 404", "check the URL")
    assert _kept(cache) == []


def test_wrong_sha256_is_refused_and_keeps_nothing(server, cache, weights_bytes):
    server.files["/m.pt"] = weights_bytes
    good, bad = hashlib.sha256(weights_bytes).hexdigest(), "0" * 64
    line = assert_one_error(cli("inspect", f"{server.url}/m.pt#sha256={bad}"), 2, "sha256")
    assert good in line and bad in line
    assert _kept(cache) == [] and not list((cache / "weights").glob("*.partial"))
    result = cli("inspect", f"{server.url}/m.pt#sha256={good.upper()}", "--json")  # the right one passes
    assert result.exit_code == 0, result.output
    assert len(_kept(cache)) == 1


def test_a_short_digest_is_a_usage_error(server):
    assert_one_error(cli("inspect", f"{server.url}/m.pt#sha256=abc"), 2, "3 hex digits, not 64")
    assert server.requests == []


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_interrupted_download_resumes(server, cache, weights_bytes, ranges):
    """A .partial holding the first half continues with a Range request (206), or starts over
    when the server answers 200; either way the file is byte for byte the served one."""
    server.files["/m.pt"], server.ranges = weights_bytes, ranges
    url = f"{server.url}/m.pt"
    half = len(weights_bytes) // 2
    partial = cached_path(url).with_name(cached_path(url).name + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(weights_bytes[:half])
    seen: list[tuple[int, int | None]] = []
    path = fetch(url, progress=lambda done, total: seen.append((done, total)))
    assert server.gets("/m.pt") == [f"bytes={half}-"]
    assert path.read_bytes() == weights_bytes and not partial.exists()
    assert seen[0] == ((half, len(weights_bytes)) if ranges else (0, len(weights_bytes)))
    assert seen[-1] == (len(weights_bytes), len(weights_bytes))


def test_a_connection_lost_mid_file_keeps_the_partial_for_the_next_run(server, cache, weights_bytes):
    server.files["/m.pt"] = weights_bytes
    server.cut_once.add("/m.pt")
    url = f"{server.url}/m.pt"
    assert_one_error(cli("inspect", url), 2, f"the download of {url} stopped at", "run the command again to resume")
    assert _kept(cache) == []
    result = cli("inspect", url, "--json")
    assert result.exit_code == 0, result.output
    half = (len(weights_bytes)) // 2
    assert server.gets("/m.pt") == [None, f"bytes={half}-"]
    assert cached_path(url).read_bytes() == weights_bytes


def test_a_web_page_instead_of_the_file_is_refused_and_dropped(server, cache):
    server.files["/m.pt"] = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
    url = f"{server.url}/m.pt"
    assert_one_error(cli("inspect", url), 2, url, "an HTML page")
    assert _kept(cache) == [], "a bad download stayed in the cache"


def test_not_http_is_a_usage_error(cache):
    line = assert_one_error(cli("inspect", "ftp://example.com/m.pt"), 2, "ftp scheme", "only http:// and https://")
    assert "https:/example.com" not in line


def test_connection_refused(cache):
    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_one_error(cli("inspect", f"http://127.0.0.1:{port}/m.pt"), 2, "connection refused", "host and port")


def test_unknown_host(cache, monkeypatch):
    def no_such_host(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)  # no real DNS in a test
    url = "https://weights.example.invalid/m.pt"
    assert_one_error(cli("inspect", url), 2, f"cannot download {url}", "could not be resolved", "host name")


def test_cache_home_rule(tmp_path, monkeypatch):
    from tdnet_cli.download import cache_dir

    monkeypatch.setenv("TDNET_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("TDNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tdnet"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "tdnet"


def test_init_from_a_url(server, weights_bytes, tmp_path):
    """model.init / --init read through the same download as --weights."""
    from tdnet_cli.pipeline.train_setup import init_from_pspnet

    psp = save_checkpoint(tmp_path / "psp.pt", random_model("psp-tiny"))
    server.files["/psp.pt"] = psp.read_bytes()
    model = random_model(PRESET).model
    assert init_from_pspnet(model, f"{server.url}/psp.pt") > 0
    assert server.gets("/psp.pt") == [None]


def test_weights_readme_commands_parse():
    """weights/README.md's shell lines name options the CLI has (as tests/test_readme.py does for README.md)."""
    import shlex

    from faults import REPO
    from test_readme import parse

    text = (REPO / "weights" / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    lines = [shlex.split(ln, comments=True) for b in blocks for ln in b.splitlines()]
    commands = [words[1:] for words in lines if words[:1] == ["tdnet"]]
    assert any("https://" in " ".join(c) for c in commands)
    for args in commands:
        parse(args)


def test_a_google_drive_page_says_to_download_in_a_browser(tmp_path, monkeypatch):
    """The authors' link is a Drive page: what comes back is HTML, and the hint says what to do."""
    page = tmp_path / "view"
    page.write_text("<!DOCTYPE html><html><head><title>checkpoint.zip - Google Drive</title></head></html>")
    monkeypatch.setattr("tdnet_cli.models.weights_file.fetch", lambda url: page)  # no Google from a test
    url = "https://drive.google.com/file/d/1TgoAHhbULe14cUQF-zbo7KudSK-CJDga/view?usp=sharing"
    assert_one_error(cli("inspect", url), 2, url, "an HTML page", "download it in a browser", "weights/README.md")
    assert not page.exists(), "the page stayed in the cache"


@pytest.mark.slow  # a dataset and one training iteration: about 20 s on 2 cores
def test_train_takes_init_and_teacher_urls(server, synth_data, tmp_path):
    """`tdnet train --init URL --teacher URL`: both downloaded, one iteration trains; a 404 is one line."""
    from tdnet_cli.config import toml_string

    for name, preset in (("psp.pt", "psp-tiny"), ("gpsp.pt", "gpsp-tiny")):
        server.files[f"/{name}"] = save_checkpoint(tmp_path / name, random_model(preset)).read_bytes()
    root = synth_data((96, 192), train=(2, 1))
    sets = {
        "data.root": toml_string(str(root)),
        "run.out": toml_string(str(tmp_path / "runs")),
        "model.preset": f'"{PRESET}"',
        "data.workers": "0",
        "run.val_every": "0",
        "optim.iterations": "1",
        "data.batch_size": "2",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = cli("train", *args, "--init", f"{server.url}/psp.pt", "--teacher", f"{server.url}/gpsp.pt", "--json")
    assert result.exit_code == 0, result.output
    assert server.gets("/psp.pt") == [None] and server.gets("/gpsp.pt") == [None]
    missing = f"{server.url}/none.pt"
    assert_one_error(cli("train", *args, "--init", missing), 2, f"cannot download {missing}: HTTP 404")
