"""The registry of official weight files (model/weights.yaml): lookup, download, verification."""
from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from ppd_ros.paths import default_weights_dir, share_dir


class WeightsMissingError(FileNotFoundError):
    """An official weight file is not in the weights directory."""


class WeightsVerificationError(RuntimeError):
    """A weight file's size or sha256 differs from the registry."""


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
            f"{path}: {path.stat().st_size} bytes, registry says {entry.size_bytes} for {entry.name}"
        )
    if entry.sha256 is not None:
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise WeightsVerificationError(
                f"{path}: sha256 {actual} differs from the registry's {entry.sha256} for "
                f"{entry.name}; delete it and run `ppd fetch-weights {entry.name}`"
            )


def weights_path(name: str, weights_dir: str | Path | None = None, check: bool = True) -> Path:
    """Path of registry entry ``name`` in the weights directory; verified when ``check``.

    Raises :class:`WeightsMissingError` naming ``ppd fetch-weights NAME`` when it is absent.
    """
    registry = load_registry()
    if name not in registry:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(registry)}")
    entry = registry[name]
    path = resolve_weights_dir(weights_dir) / entry.file
    if not path.is_file():
        raise WeightsMissingError(
            f"weights {entry.file} ({entry.description}) not found in {path.parent}; "
            f"run `ppd fetch-weights {name}` (licence: {entry.licence})"
        )
    if check:
        verify(entry, path)
    return path


def download(entry: WeightsEntry, weights_dir: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Download one registry entry with a progress bar, verify it, and return its path."""
    from tqdm import tqdm

    target_dir = resolve_weights_dir(weights_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / entry.file
    if target.is_file():
        verify(entry, target)
        return target
    partial = target.with_name(target.name + ".part")
    request = urllib.request.Request(entry.url, headers={"User-Agent": "ppd_ros"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise ConnectionError(
            f"cannot download {entry.name} from {entry.url} ({error}); are you offline? "
            f"Download it by hand from {entry.page} and save it as {target}"
        ) from error
    with response:
        if "text/html" in response.headers.get("Content-Type", ""):
            raise ConnectionError(
                f"{entry.url} answered with a web page, not the file (large Google Drive files need "
                f"a browser confirmation); download it from {entry.page} and save it as {target}"
            )
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(partial, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=entry.file
        ) as progress:
            while block := response.read(1 << 20):
                out.write(block)
                progress.update(len(block))
    verify(entry, partial)
    shutil.move(partial, target)
    return target
