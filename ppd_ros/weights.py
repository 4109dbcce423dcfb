"""The registry of official weight files (model/weights.yaml): lookup, download, verification."""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePath

import yaml

from ppd_ros.paths import default_weights_dir, share_dir


class WeightsMissingError(FileNotFoundError):
    """An official weight file is not in the weights directory."""


class WeightsVerificationError(RuntimeError):
    """A weight file's size or sha256 differs from the registry, or a download came short."""


class WeightsRegistryError(ValueError):
    """A registry entry that would write outside the weights directory or use a non-http(s) URL."""


@dataclass(frozen=True)
class WeightsEntry:
    """One official file of model/weights.yaml."""

    name: str
    file: str
    url: str
    page: str
    licence: str
    description: str = ""
    sha256: str | None = None
    size_bytes: int | None = None
    approx_size: str | None = None
    needs: tuple[str, ...] = ()


def load_registry(path: str | Path | None = None) -> dict[str, WeightsEntry]:
    """Read the registry (default: ``model/weights.yaml`` of this install)."""
    path = Path(path) if path else share_dir() / "model" / "weights.yaml"
    raw = yaml.safe_load(path.read_text())
    registry = {}
    for name, fields in raw.items():
        fields = dict(fields)
        fields["needs"] = tuple(fields.get("needs") or ())
        registry[name] = WeightsEntry(name=name, **fields)
    return registry


def resolve_weights_dir(weights_dir: str | Path | None = None) -> Path:
    """The weights directory: the argument, else ``$PPD_WEIGHTS_DIR``, else the user cache."""
    return Path(weights_dir).expanduser() if weights_dir else default_weights_dir()


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(entry: WeightsEntry, path: Path) -> None:
    """Check size and sha256 where the registry knows them."""
    if entry.size_bytes is not None and path.stat().st_size != entry.size_bytes:
        raise WeightsVerificationError(
            f"{path}: {path.stat().st_size} bytes, registry says {entry.size_bytes} for {entry.name}; "
            f"delete it and run `ppd fetch-weights {entry.name}`"
        )
    if entry.sha256 is not None:
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise WeightsVerificationError(
                f"{path}: sha256 {actual} differs from the registry's {entry.sha256} for "
                f"{entry.name}; delete it and run `ppd fetch-weights {entry.name}`"
            )


def entry_path(entry: WeightsEntry, weights_dir: str | Path | None = None) -> Path:
    """Where ``entry`` lives in the weights directory; :class:`WeightsRegistryError` unless its
    ``file`` is a plain file name (no folders, no ``..``, not absolute)."""
    name = PurePath(entry.file)
    if name.is_absolute() or len(name.parts) != 1 or name.name in ("", ".", "..") or "\\" in entry.file:
        raise WeightsRegistryError(
            f"registry entry {entry.name}: file {entry.file!r} must be a plain file name inside the weights "
            f"directory (no folders, '..' or absolute paths)")
    return resolve_weights_dir(weights_dir) / name.name


def _check_url(entry: WeightsEntry, url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise WeightsRegistryError(f"registry entry {entry.name}: URL {url!r} is not http(s); only http and "
                                   f"https downloads are allowed")


def weights_path(name: str, weights_dir: str | Path | None = None, check: bool = True) -> Path:
    """Path of registry entry ``name`` in the weights directory; verified when ``check``.

    Raises :class:`WeightsMissingError` naming ``ppd fetch-weights NAME`` when it is absent.
    """
    registry = load_registry()
    if name not in registry:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(registry)}")
    entry = registry[name]
    path = entry_path(entry, weights_dir)
    if not path.is_file():
        raise WeightsMissingError(
            f"weights {entry.file} ({entry.description}) not found in {path.parent}; "
            f"run `ppd fetch-weights {name}` (licence: {entry.licence})"
        )
    if check:
        verify(entry, path)
    return path


def download(entry: WeightsEntry, weights_dir: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Download one registry entry with a progress bar, verify it, and return its path.

    Only http(s) URLs; the body must match the server's Content-Length and the registry's size
    (when known) before it is verified and renamed from ``<file>.part`` to its final name. On any
    failure the ``.part`` file is removed: nothing short ever lies under the final name.
    """
    from tqdm import tqdm

    target = entry_path(entry, weights_dir)
    _check_url(entry, entry.url)
    if target.is_file():
        verify(entry, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    by_hand = f"download it by hand from {entry.page} and save it as {target}"
    request = urllib.request.Request(entry.url, headers={"User-Agent": "ppd_ros"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (TimeoutError, urllib.error.URLError) as error:
        if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
            raise ConnectionError(f"no answer from {entry.url} within {timeout:g} s (timed out; raise "
                                  f"--timeout on a slow network, or {by_hand})") from error
        raise ConnectionError(f"cannot download {entry.name} from {entry.url} ({error}); are you offline? "
                              f"Or {by_hand}") from error
    except OSError as error:
        raise ConnectionError(f"cannot download {entry.name} from {entry.url} ({error}); are you offline? "
                              f"Or {by_hand}") from error
    received = 0
    try:
        with response:
            _check_url(entry, response.geturl())  # after redirects
            if "text/html" in response.headers.get("Content-Type", ""):
                raise ConnectionError(
                    f"{entry.url} answered with a web page, not the file (large Google Drive files need "
                    f"a browser confirmation); {by_hand}")
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.strip().isdigit() else None
            if total is not None and entry.size_bytes is not None and total != entry.size_bytes:
                raise WeightsVerificationError(
                    f"{entry.url} announces {total} bytes (Content-Length) but the registry says "
                    f"{entry.size_bytes} for {entry.name}: not the expected file; nothing was written")
            expected = total if total is not None else entry.size_bytes
            with open(partial, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True, desc=entry.file) as bar:
                while True:
                    try:
                        block = response.read1(1 << 20)  # what has arrived: a stall keeps the count
                    except TimeoutError as error:
                        raise ConnectionError(
                            f"download of {entry.url} timed out: no data for {timeout:g} s after {received} of "
                            f"{expected if expected is not None else 'unknown'} bytes; run it again") from error
                    except (OSError, http.client.HTTPException) as error:
                        raise ConnectionError(f"download of {entry.url} failed after {received} bytes "
                                              f"({error!r}); run it again") from error
                    if not block:
                        break
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        if expected is not None and received != expected:
            source = "Content-Length" if total is not None else "the registry size"
            raise WeightsVerificationError(
                f"download of {entry.url} ended after {received} of {expected} bytes ({source}): the "
                f"connection was cut; nothing was saved, run `ppd fetch-weights {entry.name}` again")
        verify(entry, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target
