"""The `ppd` command line: infer, fetch-weights, bench."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def colorize_depth(relative_depth, label: str | None = None):
    """Relative log-depth (h, w) -> BGR uint8 colour map (near = bright), optional label text."""
    import cv2
    import numpy as np

    finite = np.isfinite(relative_depth)
    lo, hi = (np.percentile(relative_depth[finite], [2, 98]) if finite.any() else (0.0, 1.0))
    scaled = np.clip((hi - relative_depth) / max(hi - lo, 1e-6), 0, 1)
    colored = cv2.applyColorMap((np.nan_to_num(scaled) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    if label:
        cv2.putText(colored, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return colored


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

    from ppd_ros.engine import DepthEstimator

    estimator = DepthEstimator.create(
        args.model, args.weights_dir, args.device, args.steps, args.target_area, args.seed
    )
    untrained = estimator.model_name == "tiny-random"
    if untrained:
        print("model tiny-random: randomly initialised tiny network, outputs are NOT depth (smoke run)")
    inputs = _collect_inputs(args.paths)
    written = 0
    for path in tqdm(inputs, desc="ppd infer", unit="file"):
        out_dir = Path(args.output) if args.output else path.parent
        if path.suffix.lower() in VIDEO_SUFFIXES:
            out_dir = out_dir / f"{path.stem}_depth"
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, rgb in _frames(path):
            prediction = estimator.predict(rgb)
            depth = prediction.depth_numpy()
            if args.output_size == "input":
                height, width = prediction.input_size
                depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
            stem = f"{name}_depth_{estimator.model_name}"
            np.save(out_dir / f"{stem}.npy", depth.astype(np.float32))
            label = "tiny-random: untrained, not depth" if untrained else None
            cv2.imwrite(str(out_dir / f"{stem}.png"), colorize_depth(depth, label))
            written += 1
    print(
        f"wrote {written} depth maps (.npy relative log-depth + .png) with model "
        f"{estimator.model_name}, {estimator.steps} steps, on {estimator.device}"
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


def add_model_arguments(parser: argparse.ArgumentParser, default: str | None = "ppd-da2",
                        choices: tuple[str, ...] | None = None, model_help: str | None = None) -> None:
    """--model, --weights-dir, --device, --steps, --target-area, --seed (shared by ppd commands)."""
    from ppd_ros.engine import DEFAULT_TARGET_AREA, MODEL_NAMES

    parser.add_argument("--model", default=default, choices=choices or MODEL_NAMES, help=model_help)
    parser.add_argument("--weights-dir", default=None, help="default: $PPD_WEIGHTS_DIR or ~/.cache/ppd_ros/weights")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--steps", type=int, default=4, help="Euler sampling steps")
    parser.add_argument("--target-area", type=int, default=None,
                        help=f"inference pixels (aspect kept); default: the model's own ({DEFAULT_TARGET_AREA} "
                             "for the PPD models)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (reproducible output)")


def build_parser() -> argparse.ArgumentParser:
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
