"""The `ppd` command line: infer, fetch-weights, bench."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

# ppd infer reads JPEG/PNG images (header checked before decoding) and videos; these other image
# files are skipped with a reason rather than handed to a decoder that trusts their headers.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
REFUSED_IMAGE_SUFFIXES = {".bmp", ".tif", ".tiff", ".webp", ".jp2", ".j2k", ".ppm", ".pgm", ".pbm", ".gif",
                          ".exr", ".hdr", ".avif", ".heic"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
DEFAULT_INFER_OUTPUT = Path("out") / "infer"


@dataclass
class InferInputs:
    """What ``ppd infer`` found: (file, output subfolder) pairs, reasons for skipped paths, and the
    number of other files ignored (not images or videos, hidden, or outputs of ppd infer)."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ignored: int = 0


def _is_infer_output(path: Path, model_names) -> bool:
    return path.suffix.lower() in (".png", ".npy") and any(path.stem.endswith(f"_depth_{m}") for m in model_names)


def collect_inputs(paths: list[str], model_names) -> InferInputs:
    """Images and videos of ``paths``; folders are searched recursively (hidden entries and earlier
    outputs of ``ppd infer``, ``*_depth_<model>.png/.npy``, left out), and each file keeps its
    subfolder below the folder it was found in for the output."""
    found = InferInputs()
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            found.files.append((root, Path()))
            continue
        if not root.is_dir():
            found.skipped.append(f"{root}: no such file or folder")
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if not path.is_file() or any(part.startswith(".") for part in relative.parts):
                continue
            suffix = path.suffix.lower()
            if _is_infer_output(path, model_names):
                found.ignored += 1
            elif suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
                found.files.append((path, relative.parent))
            elif suffix in REFUSED_IMAGE_SUFFIXES:
                found.skipped.append(f"{path}: {suffix[1:].upper()} images are not read (JPEG and PNG are); "
                                     f"convert it to PNG")
            else:
                found.ignored += 1
    return found


def _frames(path: Path, max_pixels: int):
    """(name, rgb) pairs of an image or of every frame of a video; images above ``max_pixels`` (by
    their JPEG/PNG header, before decoding) and videos with larger frames raise ValueError."""
    import cv2

    from ppd_ros.msg_decode import ImageTooLargeError, decode_image

    if path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise ValueError(f"cannot open video {path}")
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            if width * height > max_pixels:
                raise ValueError(f"video {path} has {width}x{height} frames, above the limit of {max_pixels} "
                                 f"pixels (--max-pixels)")
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield f"{path.stem}_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            capture.release()
        return
    # IMREAD_COLOR, like cv2.imread: EXIF orientation applied, grey/alpha/16-bit made 8-bit BGR.
    try:
        bgr = decode_image(path.read_bytes(), str(path), max_pixels, flags=cv2.IMREAD_COLOR)
    except ImageTooLargeError as error:
        raise ImageTooLargeError(f"{error} (--max-pixels)") from None
    yield path.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cmd_infer(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from ppd_ros.arguments import backend_from_args
    from ppd_ros.colormap import relative_depth_rgb
    from ppd_ros.geometry.resize import resize_nearest
    from ppd_ros.model_specs import MODEL_SPECS

    if args.max_pixels <= 0:
        raise ValueError(f"--max-pixels must be positive, got {args.max_pixels}")
    inputs = collect_inputs(args.paths, tuple(MODEL_SPECS))
    for reason in inputs.skipped:
        print(f"ppd infer: skipped {reason}", file=sys.stderr)
    out_root = Path(args.output) if args.output else DEFAULT_INFER_OUTPUT
    if not inputs.files:
        print(f"ppd infer: no JPEG/PNG images or videos found in {' '.join(args.paths)} (folders are searched "
              f"recursively; {inputs.ignored} other files ignored)", file=sys.stderr)
        return 1
    backend = backend_from_args(args)
    untrained = backend.spec.random_tiny
    if untrained:
        print(f"model {backend.spec.name}: randomly initialised tiny network, outputs are NOT depth (smoke run)")
    written = images = videos = 0
    skipped = list(inputs.skipped)
    for path, subfolder in tqdm(inputs.files, desc="ppd infer", unit="file"):
        out_dir = out_root / subfolder
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        if is_video:
            out_dir = out_dir / f"{path.stem}_depth"
        try:
            for name, rgb in _frames(path, args.max_pixels):
                (output,) = backend.push(rgb, name)
                depth = output.relative.float().cpu().numpy()
                if args.output_size == "input":
                    depth = resize_nearest(depth, *output.input_size)
                out_dir.mkdir(parents=True, exist_ok=True)
                stem = f"{name}_depth_{backend.spec.name}"
                np.save(out_dir / f"{stem}.npy", depth.astype(np.float32))
                colored = cv2.cvtColor(relative_depth_rgb(depth), cv2.COLOR_RGB2BGR)
                if untrained:
                    cv2.putText(colored, f"{backend.spec.name}: untrained, not depth", (8, 24),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
                cv2.imwrite(str(out_dir / f"{stem}.png"), colored)
                written += 1
        except (ValueError, OSError, cv2.error) as error:  # one bad file never stops the batch
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            reason = reason if str(path) in reason else f"{path}: {reason}"
            skipped.append(reason)
            tqdm.write(f"ppd infer: skipped {reason}", file=sys.stderr)
            continue
        videos += is_video
        images += not is_video
    print(
        f"ppd infer: read {images} images and {videos} videos, wrote {written} depth maps (.npy relative "
        f"log-depth + .png) to {out_root} with model {backend.spec.name}, {backend.steps} steps, on "
        f"{backend.device}; skipped {len(skipped)}" + (" (reasons above)" if skipped else "")
        + (f"; ignored {inputs.ignored} other files" if inputs.ignored else "")
    )
    return 1 if skipped else 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from ppd_ros.weights import download, load_registry, resolve_weights_dir

    registry = load_registry()
    names = list(registry) if args.name == "all" else [args.name]
    for name in names:
        if name not in registry:
            print(f"unknown weights {name!r}; known: all, {', '.join(registry)}", file=sys.stderr)
            return 2
    failures = 0
    for name in names:
        entry = registry[name]
        print(f"{name}: {entry.file} ({entry.approx_size or entry.size_bytes}), licence {entry.licence}")
        try:
            path = download(entry, args.weights_dir, timeout=args.timeout)
            print(f"  -> {path}")
        except (ConnectionError, OSError, RuntimeError, ValueError) as error:
            print(f"  failed: {error}", file=sys.stderr)
            failures += 1
    print(f"weights directory: {resolve_weights_dir(args.weights_dir)}")
    return 1 if failures else 0


def cmd_dds_profile(args: argparse.Namespace) -> int:
    import os
    import shlex

    from ppd_ros.paths import share_dir

    profile = share_dir() / "config" / "fastdds_shm.xml"
    if not profile.is_file():
        raise FileNotFoundError(f"the Fast DDS profile is not installed at {profile}")
    if args.path:
        print(profile)
        return 0
    print(f"# ppd_ros Fast DDS profile (shared memory for big images and clouds): {profile}")
    print("# Set it in EVERY process that publishes or subscribes big images, the camera driver's included;")
    print("# without it Fast DDS silently drops most of them. In a launch file: SetEnvironmentVariable.")
    current = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    if current and current != str(profile):
        print(f"# (this shell has FASTRTPS_DEFAULT_PROFILES_FILE={current})")
    print(f"export FASTRTPS_DEFAULT_PROFILES_FILE={shlex.quote(str(profile))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ppd_ros.arguments import add_model_arguments
    from ppd_ros.bench import BENCHMARKS
    from ppd_ros.msg_decode import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(prog="ppd", description="Pixel-Perfect Depth tools")
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", help="depth for images, folders (recursively) and videos")
    infer.add_argument("paths", nargs="+")
    infer.add_argument("--output", default=None,
                       help=f"output folder (default: {DEFAULT_INFER_OUTPUT}); subfolders of input folders are kept")
    infer.add_argument("--output-size", choices=("input", "inference"), default="input",
                       help="save depth at the input size (nearest upsampling) or the inference size")
    infer.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                       help="refuse images (by their JPEG/PNG header, before decoding) and videos with more "
                            "pixels (default: 8192x8192)")
    add_model_arguments(infer)
    infer.set_defaults(func=cmd_infer)

    fetch = commands.add_parser("fetch-weights", help="download official weights (NAME or all)")
    fetch.add_argument("name")
    fetch.add_argument("--weights-dir", default=None)
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    fetch.set_defaults(func=cmd_fetch_weights)

    dds = commands.add_parser("dds-profile", help="where the Fast DDS shared-memory profile is installed, "
                                                  "as an export line (eval \"$(ppd dds-profile)\")")
    dds.add_argument("--path", action="store_true", help="print only the profile's path")
    dds.set_defaults(func=cmd_dds_profile)

    for name, module, help_text in (
        ("eval-bag", "ppd_ros.evaluation.eval_bag", "evaluate depth on a recorded bag"),
        ("eval-benchmark", "ppd_ros.evaluation.benchmarks", "standard depth benchmarks"),
        ("synth-bag", "ppd_ros.synthetic.bag", "write a rosbag2 of a synthetic camera sweep with GT depth (and LiDAR)"),
        ("export-onnx", "ppd_ros.backends.onnx_export", "write an image model's encoder and DiT as ONNX graphs"),
    ):
        sub = commands.add_parser(name, help=help_text)
        __import__(module, fromlist=["add_arguments"]).add_arguments(sub)
        sub.set_defaults(func=__import__(module, fromlist=["run"]).run)

    bench = commands.add_parser("bench", help="benchmarks that print ratios against a baseline")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        sub = kinds.add_parser(name, help=help_text)
        sub.set_defaults(module=module)
        __import__(module, fromlist=["add_arguments"]).add_arguments(sub)
    bench.set_defaults(func=lambda a: __import__(a.module, fromlist=["run"]).run(a))
    return parser


def main(argv: list[str] | None = None) -> int:
    from ppd_ros.nets.checkpoints import CheckpointError
    from ppd_ros.weights import WeightsMissingError, WeightsVerificationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (WeightsMissingError, WeightsVerificationError, CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"ppd {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
