"""The weights registry and `ppd fetch-weights`: real downloads from a loopback HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest

from ppd_ros.cli import main as ppd_main
from ppd_ros.weights import (
    WeightsMissingError,
    WeightsVerificationError,
    download,
    load_registry,
    weights_path,
)

OFFICIAL = {"ppd", "ppd_moge", "depth_anything_v2_vitl", "moge2_vitl", "ppvd", "pi3"}


def test_registry_lists_every_official_file():
    registry = load_registry()
    assert OFFICIAL <= set(registry)
    files = {entry.file for entry in registry.values()}
    assert {"ppd.pth", "ppd_moge.pth", "depth_anything_v2_vitl.pth", "ppvd.pth", "pi3.safetensors"} <= files
    for entry in registry.values():
        assert entry.url.startswith("https://") and entry.licence
        assert entry.sha256 is None or len(entry.sha256) == 64
        assert set(entry.needs) <= set(registry)
    assert "CC-BY-NC-4.0" in registry["depth_anything_v2_vitl"].licence


@pytest.fixture()
def file_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 4096  # 1 MiB
    (served / "weights.bin").write_bytes(payload)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", payload
    server.shutdown()


def test_download_verifies_sha256_and_size(file_server, tmp_path):
    base, payload = file_server
    entry = replace(
        load_registry()["ppd"],
        url=f"{base}/weights.bin",
        sha256=hashlib.sha256(payload).hexdigest(),
        size_bytes=len(payload),
    )
    path = download(entry, tmp_path / "w")
    assert path == tmp_path / "w" / "ppd.pth" and path.read_bytes() == payload
    assert download(entry, tmp_path / "w") == path  # present and verified: no second download


def test_download_rejects_wrong_sha256(file_server, tmp_path):
    base, _ = file_server
    entry = replace(load_registry()["ppd"], url=f"{base}/weights.bin", sha256="0" * 64)
    with pytest.raises(WeightsVerificationError, match="sha256"):
        download(entry, tmp_path / "w")
    assert not (tmp_path / "w" / "ppd.pth").exists()


def test_download_offline_says_so(tmp_path):
    entry = replace(load_registry()["ppd"], url="http://127.0.0.1:9/ppd.pth")
    with pytest.raises(ConnectionError, match="offline"):
        download(entry, tmp_path)


def test_missing_weights_name_the_fetch_command(tmp_path):
    with pytest.raises(WeightsMissingError, match="ppd fetch-weights ppd"):
        weights_path("ppd", tmp_path)


def test_fetch_weights_cli_fails_cleanly_when_offline(tmp_path, monkeypatch, capsys):
    # The real registry URLs are unreachable here (no internet): one clear failure line, exit 1.
    monkeypatch.setenv("PPD_WEIGHTS_DIR", str(tmp_path))
    assert ppd_main(["fetch-weights", "pi3", "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "pi3" in err
    assert ppd_main(["fetch-weights", "no-such-model"]) == 2


# ------------------------------------------------------------------------------------------------
# Hostile and broken servers (issue 12 item 10): a real loopback HTTP server that cuts bodies short,
# announces wrong lengths, or goes silent.
# ------------------------------------------------------------------------------------------------
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture()
def broken_server():
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/silent":  # accepts the connection, never answers
                release.wait(5)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if self.path == "/short":  # announces 1 MiB, sends 100 KB and closes
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[:100_000])
            elif self.path == "/unannounced-short":  # no Content-Length, 100 KB
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(PAYLOAD[:100_000])
            elif self.path == "/other-length":  # a different file than the registry's
                self.send_header("Content-Length", "2048")
                self.end_headers()
                self.wfile.write(PAYLOAD[:2048])
            elif self.path == "/stalls":  # sends part of the body, then nothing
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[:50_000])
                self.wfile.flush()
                release.wait(5)
            else:
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


def _entry(url, **fields):
    return replace(load_registry()["ppd"], url=url, **fields)


def _left(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_short_body_is_caught_by_content_length_and_never_saved(broken_server, tmp_path):
    weights = tmp_path / "w"
    for _ in range(2):  # the next run downloads again: nothing short was kept
        with pytest.raises(WeightsVerificationError, match=r"ended after 100000 of 1048576 bytes \(Content-Length\)"):
            download(_entry(f"{broken_server}/short"), weights)
        assert _left(weights) == []
    assert download(_entry(f"{broken_server}/good"), weights).read_bytes() == PAYLOAD


def test_short_body_without_content_length_is_caught_by_the_registry_size(broken_server, tmp_path):
    with pytest.raises(WeightsVerificationError, match=r"ended after 100000 of 1048576 bytes \(the registry size\)"):
        download(_entry(f"{broken_server}/unannounced-short", size_bytes=len(PAYLOAD)), tmp_path)
    assert _left(tmp_path) == []


def test_content_length_that_contradicts_the_registry_is_refused(broken_server, tmp_path):
    with pytest.raises(WeightsVerificationError,
                       match=r"announces 2048 bytes \(Content-Length\) but the registry says 1048576"):
        download(_entry(f"{broken_server}/other-length", size_bytes=len(PAYLOAD)), tmp_path)
    assert _left(tmp_path) == []


@pytest.mark.parametrize("path, message", [
    ("/silent", r"no answer from http://127\.0\.0\.1:\d+/silent within 0\.5 s \(timed out"),
    ("/stalls", r"download of http://127\.0\.0\.1:\d+/stalls timed out: no data for 0\.5 s after 50000 of "
                r"1048576 bytes"),
])
def test_timeouts_say_what_timed_out_and_leave_no_part_file(broken_server, tmp_path, path, message):
    with pytest.raises(ConnectionError, match=message):
        download(_entry(f"{broken_server}{path}"), tmp_path, timeout=0.5)
    assert _left(tmp_path) == []


@pytest.mark.parametrize("file", ["../escaped.pth", "/tmp/absolute.pth", "sub/dir.pth", ".."])
def test_registry_file_names_stay_inside_the_weights_dir(broken_server, tmp_path, file):
    weights = tmp_path / "w"
    with pytest.raises(ValueError, match="must be a plain file name inside the weights directory"):
        download(_entry(f"{broken_server}/good", file=file), weights)
    assert _left(tmp_path) == []


def test_only_http_urls_are_downloaded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not weights")
    for url in (secret.as_uri(), "ftp://127.0.0.1/ppd.pth"):
        with pytest.raises(ValueError, match="is not http\\(s\\)"):
            download(_entry(url), tmp_path / "w")
    assert _left(tmp_path / "w") == []
