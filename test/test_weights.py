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
