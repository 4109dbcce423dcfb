"""The `ppd` command line: infer, fetch-weights, bench."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def _collect_inputs(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def _frames(path: Path):
    """(name, rgb) pairs of an image or of every frame of a video."""
    import cv2

    if path.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise ValueError(f"cannot open video {path}")
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield f"{path.stem}_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        capture.release()
        return
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    yield path.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cmd_infer(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np
    from tqdm import tqdm

    from ppd_ros.arguments import backend_from_args
    from ppd_ros.colormap import relative_depth_rgb
    from ppd_ros.geometry.resize import resize_nearest

    backend = backend_from_args(args)
    untrained = backend.spec.random_tiny
    if untrained:
        print(f"model {backend.spec.name}: randomly initialised tiny network, outputs are NOT depth (smoke run)")
    inputs = _collect_inputs(args.paths)
    written = 0
    for path in tqdm(inputs, desc="ppd infer", unit="file"):
        out_dir = Path(args.output) if args.output else path.parent
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out_dir = out_dir / f"{path.stem}_depth"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, rgb in _frames(path):
            (output,) = backend.push(rgb, name)
            depth = output.relative.float().cpu().numpy()
            if args.output_size == "input":
                depth = resize_nearest(depth, *output.input_size)
            stem = f"{name}_depth_{backend.spec.name}"
            np.save(out_dir / f"{stem}.npy", depth.astype(np.float32))
            colored = cv2.cvtColor(relative_depth_rgb(depth), cv2.COLOR_RGB2BGR)
            if untrained:
                cv2.putText(colored, "tiny-random: untrained, not depth", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                            (255, 255, 255), 2)
            cv2.imwrite(str(out_dir / f"{stem}.png"), colored)
            written += 1
    print(
        f"wrote {written} depth maps (.npy relative log-depth + .png) with model "
        f"{backend.spec.name}, {backend.steps} steps, on {backend.device}"
    )
    return 0


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
        except (ConnectionError, OSError, RuntimeError) as error:
            print(f"  failed: {error}", file=sys.stderr)
            failures += 1
    print(f"weights directory: {resolve_weights_dir(args.weights_dir)}")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    from ppd_ros.arguments import add_model_arguments
    from ppd_ros.bench import BENCHMARKS

    parser = argparse.ArgumentParser(prog="ppd", description="Pixel-Perfect Depth tools")
    commands = parser.add_subparsers(dest="command", required=True)

    infer = commands.add_parser("infer", help="depth for images, folders and videos")
    infer.add_argument("paths", nargs="+")
    infer.add_argument("--output", default=None, help="output folder (default: beside each input)")
    infer.add_argument("--output-size", choices=("input", "inference"), default="input",
                       help="save depth at the input size (nearest upsampling) or the inference size")
    add_model_arguments(infer)
    infer.set_defaults(func=cmd_infer)

    fetch = commands.add_parser("fetch-weights", help="download official weights (NAME or all)")
    fetch.add_argument("name")
    fetch.add_argument("--weights-dir", default=None)
    fetch.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    fetch.set_defaults(func=cmd_fetch_weights)

    for name, module, help_text in (
        ("eval-bag", "ppd_ros.evaluation.eval_bag", "evaluate depth on a recorded bag"),
        ("eval-benchmark", "ppd_ros.evaluation.benchmarks", "standard depth benchmarks"),
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
    from ppd_ros.weights import WeightsMissingError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (WeightsMissingError, FileNotFoundError, ValueError) as error:
        print(f"ppd {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
