"""`ppd eval-benchmark`: zero-shot relative depth on NYUv2, KITTI (Eigen split), ETH3D, ScanNet
and DIODE with the protocol of the PPD paper's table (which follows the Marigold evaluation sets).

Protocol per sample: predict relative log-depth, resize it bilinear to the GT resolution, fit
``log(gt + 1) = scale * r + shift`` by least squares on the dataset's valid pixels, map back to
metres, clip to the dataset's depth range, then AbsRel and delta1 on the valid pixels; the
reported numbers are means over samples. Valid pixels: GT inside (min_depth, max_depth) and the
dataset mask (NYUv2 Eigen crop, KITTI benchmark crop + Eigen crop, DIODE's mask file).

File layouts are those of the Marigold evaluation archives (extract them; ``--data-root`` is the
folder holding the paths of the split lists):

- nyuv2:   test/<scene>/rgb_NNNN.png, depth_NNNN.png (uint16 mm); list lines "rgb depth filled"
- kitti:   <date>/<drive>/image_02/data/<id>.png and <drive>/proj_depth/groundtruth/image_02/<id>.png
           (uint16, metres x 256); list = eigen_test_files_with_gt.txt ("rgb depth focal", depth
           "None" = no GT, skipped). The list is required: it defines the Eigen split.
- eth3d:   rgb/<scene>/images/dslr_images/DSC_NNNN.JPG and depth/<scene>_dslr_depth/<scene>/
           ground_truth_depth/dslr_images/DSC_NNNN.JPG (raw float32, image size, inf = none)
- scannet: <scene>/color/NNNNNN.jpg, <scene>/depth/NNNNNN.png (uint16 mm)
- diode:   <indoors|outdoor>/scene_*/scan_*/<name>.png, <name>_depth.npy, <name>_depth_mask.npy

Without ``--split-file`` the samples are found by walking the layout (except KITTI).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ppd_ros.evaluation import metrics as M

# Published PPD results (paper table; AbsRel %, delta1 %), by semantic encoder.
PUBLISHED = {
    "ppd-da2": {"nyuv2": (4.1, 97.7), "kitti": (7.0, 95.5), "eth3d": (4.3, 98.0), "scannet": (4.6, 97.2),
                "diode": (6.8, 95.9)},
    "ppd-moge2": {"nyuv2": (3.3, 98.2), "kitti": (5.3, 97.0), "eth3d": (3.0, 99.1), "scannet": (3.5, 98.1),
                  "diode": (5.2, 97.0)},
}


@dataclass
class Sample:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    gt: np.ndarray  # (H, W) float32 metres
    valid: np.ndarray  # (H, W) bool: evaluation mask (GT range and dataset mask)


@dataclass(frozen=True)
class Dataset:
    name: str
    min_depth: float
    max_depth: float
    discover: Callable[[Path], list[list[str]]]  # data root -> split lines (relative paths)
    load: Callable[["Dataset", Path, list[str]], Sample]


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_png16(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint16 or image.ndim != 2:
        raise ValueError(f"{path} is not a single-channel 16-bit PNG")
    return image


def range_mask(dataset: Dataset, gt: np.ndarray) -> np.ndarray:
    return M.gt_valid_mask(gt, min_depth=dataset.min_depth, max_depth=dataset.max_depth)


# ------------------------------------------------------------------------------- NYUv2
NYU_EIGEN_CROP = (slice(45, 471), slice(41, 601))  # rows, columns of the 480 x 640 images


def discover_nyu(root: Path) -> list[list[str]]:
    lines = []
    for rgb in sorted(root.glob("test/*/rgb_*.png")):
        number = rgb.stem.split("_")[1]
        lines.append([str(p.relative_to(root)) for p in (rgb, rgb.with_name(f"depth_{number}.png"),
                                                         rgb.with_name(f"filled_{number}.png"))])
    return lines


def load_nyu(dataset: Dataset, root: Path, line: list[str]) -> Sample:
    rgb = read_rgb(root / line[0])
    gt = read_png16(root / line[1]).astype(np.float32) / 1000.0  # raw (unfilled) depth, mm
    crop = np.zeros(gt.shape, bool)
    crop[NYU_EIGEN_CROP] = True
    return Sample(line[0], rgb, gt, range_mask(dataset, gt) & crop)


# ------------------------------------------------------------------------------- KITTI
KITTI_BENCHMARK_SIZE = (352, 1216)  # height, width: bottom rows, centred columns


def kitti_benchmark_crop(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    top = height - KITTI_BENCHMARK_SIZE[0]
    left = (width - KITTI_BENCHMARK_SIZE[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"KITTI image {width}x{height} is smaller than the benchmark crop 1216x352")
    return image[top:top + KITTI_BENCHMARK_SIZE[0], left:left + KITTI_BENCHMARK_SIZE[1]]


def kitti_eigen_mask(height: int, width: int) -> np.ndarray:
    """Eigen et al. evaluation region as fractions of the (cropped) GT size."""
    mask = np.zeros((height, width), bool)
    mask[int(0.3324324 * height):int(0.91351351 * height), int(0.0359477 * width):int(0.96405229 * width)] = True
    return mask


def discover_kitti(root: Path) -> list[list[str]]:
    raise ValueError("KITTI needs --split-file eigen_test_files_with_gt.txt (it defines the Eigen test split)")


def load_kitti(dataset: Dataset, root: Path, line: list[str]) -> Sample:
    rgb = kitti_benchmark_crop(read_rgb(root / line[0]))
    gt = kitti_benchmark_crop(read_png16(root / line[1])).astype(np.float32) / 256.0
    return Sample(line[0], np.ascontiguousarray(rgb), np.ascontiguousarray(gt),
                  range_mask(dataset, gt) & kitti_eigen_mask(*gt.shape))


# ------------------------------------------------------------------------------- ETH3D
def discover_eth3d(root: Path) -> list[list[str]]:
    lines = []
    for rgb in sorted(root.glob("rgb/*/images/dslr_images/*.JPG")):
        scene = rgb.parts[-4]
        depth = root / "depth" / f"{scene}_dslr_depth" / scene / "ground_truth_depth" / "dslr_images" / rgb.name
        lines.append([str(rgb.relative_to(root)), str(depth.relative_to(root))])
    return lines


def load_eth3d(dataset: Dataset, root: Path, line: list[str]) -> Sample:
    rgb = read_rgb(root / line[0])
    raw = np.fromfile(root / line[1], dtype="<f4")
    height, width = rgb.shape[:2]  # the official depth maps are 6048 x 4032 like the DSLR images
    if raw.size != height * width:
        raise ValueError(f"{line[1]}: {raw.size} depth values for a {width}x{height} image")
    gt = raw.reshape(height, width).astype(np.float32)
    gt[~np.isfinite(gt)] = 0.0
    return Sample(line[0], rgb, gt, range_mask(dataset, gt))


# ------------------------------------------------------------------------------- ScanNet
def discover_scannet(root: Path) -> list[list[str]]:
    lines = []
    for rgb in sorted(root.glob("scene*/color/*.jpg")):
        depth = rgb.parent.parent / "depth" / f"{rgb.stem}.png"
        lines.append([str(rgb.relative_to(root)), str(depth.relative_to(root))])
    return lines


def load_scannet(dataset: Dataset, root: Path, line: list[str]) -> Sample:
    rgb = read_rgb(root / line[0])
    gt = read_png16(root / line[1]).astype(np.float32) / 1000.0
    if rgb.shape[:2] != gt.shape:  # raw ScanNet colour is 1296x968, depth 640x480
        rgb = cv2.resize(rgb, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_AREA)
    return Sample(line[0], rgb, gt, range_mask(dataset, gt))


# ------------------------------------------------------------------------------- DIODE
def discover_diode(root: Path) -> list[list[str]]:
    lines = []
    for rgb in sorted(root.glob("*/scene_*/scan_*/*.png")):
        base = rgb.with_suffix("")
        files = (rgb, Path(f"{base}_depth.npy"), Path(f"{base}_depth_mask.npy"))
        lines.append([str(p.relative_to(root)) for p in files])
    return lines


def load_diode(dataset: Dataset, root: Path, line: list[str]) -> Sample:
    rgb = read_rgb(root / line[0])
    gt = np.load(root / line[1]).squeeze().astype(np.float32)
    mask = np.load(root / line[2]).squeeze().astype(bool)
    return Sample(line[0], rgb, gt, range_mask(dataset, gt) & mask)


DATASETS = {
    "nyuv2": Dataset("nyuv2", 1e-3, 10.0, discover_nyu, load_nyu),
    "kitti": Dataset("kitti", 1e-5, 80.0, discover_kitti, load_kitti),
    "eth3d": Dataset("eth3d", 1e-5, math.inf, discover_eth3d, load_eth3d),
    "scannet": Dataset("scannet", 1e-3, 10.0, discover_scannet, load_scannet),
    "diode": Dataset("diode", 0.6, 350.0, discover_diode, load_diode),
}


def split_lines(dataset: Dataset, root: Path, split_file: str | None) -> list[list[str]]:
    """Relative paths of each sample: from the split list, else found by walking the layout.
    KITTI lines whose depth is "None" are dropped (no GT)."""
    if split_file:
        lines = [line.split() for line in Path(split_file).read_text().splitlines() if line.strip()]
    else:
        lines = dataset.discover(root)
    lines = [line for line in lines if len(line) >= 2 and line[1] != "None"]
    if not lines:
        raise ValueError(f"no {dataset.name} samples under {root}")
    return lines


def iter_samples(dataset: Dataset, root: str | Path, split_file: str | None = None,
                 max_samples: int | None = None) -> Iterator[Sample]:
    root = Path(root)
    lines = split_lines(dataset, root, split_file)
    for line in lines[:max_samples]:
        yield dataset.load(dataset, root, line)


# ------------------------------------------------------------------------------- protocol
def evaluate_relative(relative: np.ndarray, sample: Sample, dataset: Dataset) -> tuple[float, float]:
    """(AbsRel, delta1) of relative log-depth for one sample under the benchmark protocol."""
    height, width = sample.gt.shape
    if relative.shape != (height, width):
        relative = cv2.resize(relative.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    depth, _, _ = M.align_log_depth(relative, sample.gt, sample.valid)
    depth = np.clip(depth, dataset.min_depth, dataset.max_depth)
    return M.abs_rel(depth, sample.gt, sample.valid), M.delta1(depth, sample.gt, sample.valid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ppd_ros.arguments import add_model_arguments

    parser.add_argument("dataset", choices=tuple(DATASETS))
    parser.add_argument("--data-root", required=True, help="folder with the dataset in its evaluation layout")
    parser.add_argument("--split-file", default=None, help="list of 'rgb depth [...]' relative paths per line")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="folder for samples.csv and summary.json")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ppd_ros.arguments import backend_from_args

    dataset = DATASETS[args.dataset]
    backend = backend_from_args(args)
    lines = split_lines(dataset, Path(args.data_root), args.split_file)[: args.max_samples]
    rows = []
    started = time.perf_counter()
    for line in tqdm(lines, desc=f"ppd eval-benchmark {dataset.name}", unit="image"):
        sample = dataset.load(dataset, Path(args.data_root), line)
        (output,) = backend.push(sample.rgb, sample.name)
        abs_rel, d1 = evaluate_relative(output.relative.float().cpu().numpy(), sample, dataset)
        rows.append(dict(sample=sample.name, abs_rel=abs_rel, delta1=d1, valid_pixels=int(sample.valid.sum()),
                         seconds=output.model_seconds))
    wall = time.perf_counter() - started
    abs_rel = float(np.nanmean([r["abs_rel"] for r in rows])) if rows else math.nan
    d1 = float(np.nanmean([r["delta1"] for r in rows])) if rows else math.nan
    reference = PUBLISHED.get(args.model, {}).get(dataset.name)
    summary = dict(dataset=dataset.name, model=args.model, steps=args.steps, target_area=backend.target_area,
                   samples=len(rows), abs_rel_percent=100 * abs_rel, delta1_percent=100 * d1,
                   published_abs_rel_percent=reference[0] if reference else None,
                   published_delta1_percent=reference[1] if reference else None,
                   protocol="log-space least-squares alignment per image, bilinear resize to GT, clip to "
                            f"({dataset.min_depth}, {dataset.max_depth}) m, dataset masks",
                   wall_seconds=wall)
    print(f"{dataset.name}: {len(rows)} images, model {args.model}, {args.steps} steps")
    print(f"  AbsRel {100 * abs_rel:.2f} %   delta1 {100 * d1:.2f} %")
    print("  published PPD results on the full split (paper table):")
    for model, table in PUBLISHED.items():
        marker = "  <- this model" if model == args.model else ""
        print(f"    {model:10s} AbsRel {table[dataset.name][0]:.1f} %   delta1 {table[dataset.name][1]:.1f} %{marker}")
    if args.model == "tiny-random":
        print("  tiny-random is an untrained smoke-test network: these numbers are not depth quality")
    if args.max_samples is not None:
        print("  note: a subset (--max-samples) is not comparable with the published full-split numbers")
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "samples.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["sample", "abs_rel", "delta1", "valid_pixels", "seconds"])
            writer.writeheader()
            writer.writerows(rows)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if rows else 1
