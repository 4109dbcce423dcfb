"""RGB-D training data: readers for the recipe's datasets, generic folders, rosbags and synthetic scenes.

Every dataset yields dicts with
``image`` (3, H, W) float32 RGB in [0, 1], ``depth`` (1, H, W) float32 metres (0 where invalid),
``mask`` (1, H, W) bool (valid depth) and ``name`` (the sample's source, used in every error
message). Camera intrinsics are read where depth needs them (planar depth, disparity, LiDAR
projection) and not passed on: the training step uses none.

On-disk layouts (as distributed):

* Hypersim: ``<scene>/images/scene_cam_XX_final_preview/frame.NNNN.tonemap.jpg`` and
  ``<scene>/images/scene_cam_XX_geometry_hdf5/frame.NNNN.depth_meters.hdf5`` (distance to the
  camera centre in metres, NaN invalid; converted to planar depth with the fixed 886.81 px focal).
* UrbanSyn: ``rgb/rgb_NNNN.png`` and ``depth/depth_NNNN.exr`` (EXR value x 1e5 = metres).
* UnrealStereo4K: ``<scene>/Image0/NNNNN.png``, ``<scene>/Disp0/NNNNN.npy`` (disparity in px)
  and ``<scene>/Extrinsics{0,1}/NNNNN.txt`` (line 1: K row-major, line 2: 3x4 world-to-camera);
  depth = fx * baseline / disparity.
* Virtual KITTI 2: ``<SceneNN>/<variation>/frames/rgb/Camera_K/rgb_NNNNN.jpg`` and
  ``.../frames/depth/Camera_K/depth_NNNNN.png`` (uint16 centimetres, 65535 = sky).
* TartanAir: ``<env>/<Easy|Hard>/<PNNN>/image_left/NNNNNN_left.png`` and
  ``.../depth_left/NNNNNN_left_depth.npy`` (float32 metres; sky is very far).
* RGB-D folder: ``rgb/<stem>.png|jpg`` and ``depth/<stem>.png`` (uint16 mm, 0 invalid) or
  ``.exr`` / ``.npy`` (metres).
* rosbag (ROS 1 or ROS 2, sqlite3 or mcap): an image topic plus a depth-image topic, or a
  PointCloud2 topic projected with a CameraInfo topic and a fixed LiDAR-to-camera extrinsic.
"""
from __future__ import annotations

import bisect
import glob
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from ppd_ros.constants import MAX_DEPTH_M
from ppd_ros.geometry.resize import resize_nearest
from ppd_ros.msg_decode import (
    camera_info_to_model, compressed_depth_to_metres, compressed_to_rgb8, depth_image_msg_to_metres, image_to_rgb8,
    pointcloud2_xyz, stamp_ns,
)

HYPERSIM_FOCAL_PX = 886.81  # all Hypersim cameras: 1024x768, 60 deg horizontal field of view
URBANSYN_DEPTH_SCALE = 1e5
TARTANAIR_SKY_M = 200.0


class SampleError(RuntimeError):
    """A sample cannot be read (missing file, unreadable content, sizes that do not match)."""


# --------------------------------------------------------------------------------------------
# file readers


def read_rgb(path: str | Path, name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (alpha dropped); SampleError naming ``name`` if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SampleError(f"{name}: image file missing: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SampleError(f"{name}: cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _require(path: Path, name: str, what: str) -> Path:
    if not path.is_file():
        raise SampleError(f"{name}: {what} file missing: {path}")
    return path


def read_exr(path: str | Path) -> np.ndarray:
    """First channel of an OpenEXR image as float32 (H, W) (the OpenEXR package: pip's OpenCV has no EXR)."""
    import OpenEXR

    with OpenEXR.File(str(path)) as exr:
        channels = exr.channels()
        for key in ("Z", "Y", "R", "depth", "D"):
            if key in channels:
                return np.asarray(channels[key].pixels, dtype=np.float32)
        first = channels[sorted(channels)[0]].pixels
    first = np.asarray(first, dtype=np.float32)
    return first[..., 0] if first.ndim == 3 else first


def write_exr(path: str | Path, depth: np.ndarray) -> None:
    """Write (H, W) float32 as a one-channel ('Z') OpenEXR file (tests, folder exports)."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"Z": np.ascontiguousarray(depth, dtype=np.float32)}).write(str(path))


def read_depth_file(path: str | Path, name: str, png_scale: float = 1e-3) -> np.ndarray:
    """Depth in metres (H, W) float32, NaN where invalid, by extension: ``.png`` uint16 x
    ``png_scale`` (0 invalid), ``.exr`` / ``.npy`` metres (non-finite or <= 0 invalid)."""
    path = _require(Path(path), name, "depth")
    suffix = path.suffix.lower()
    if suffix == ".png":
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            raise SampleError(f"{name}: {path} is not a single-channel 16-bit PNG")
        depth = raw.astype(np.float32) * np.float32(png_scale)
        depth[raw == 0] = np.nan
        return depth
    if suffix == ".exr":
        depth = read_exr(path)
    elif suffix == ".npy":
        depth = np.load(path).astype(np.float32)
    else:
        raise SampleError(f"{name}: unsupported depth file type {path.suffix!r} ({path})")
    depth = np.squeeze(depth)
    if depth.ndim != 2:
        raise SampleError(f"{name}: depth {path} has shape {depth.shape}, expected (H, W)")
    with np.errstate(invalid="ignore"):
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def distance_to_planar_depth(distance: np.ndarray, focal_px: float) -> np.ndarray:
    """Euclidean distance to the camera centre -> depth along the optical axis (principal point
    at the image centre, pixel centres at +0.5)."""
    height, width = distance.shape
    x = np.arange(width, dtype=np.float64) - (width - 1) / 2
    y = np.arange(height, dtype=np.float64) - (height - 1) / 2
    ray_norm = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal_px**2) / focal_px
    return (distance / ray_norm).astype(np.float32)


# --------------------------------------------------------------------------------------------
# the recipe's resize / crop / flip


@dataclass
class ResizeCrop:
    """Resize (and crop) a sample to ``width`` x ``height``; optional random horizontal flip.

    ``mode``: ``"resize"`` stretches to the size (the recipe's Resize: UrbanSyn, VKITTI2,
    TartanAir to 1024x768, Hypersim to 512x512 in pre-training); ``"cover_crop"`` scales to cover
    the size at the image's aspect and crops (UnrealStereo4K's 4K frames; random crop when
    ``random_crop``, else centred); ``"none"`` keeps the size (must be multiples of 16).
    RGB uses area (downscale) / linear (upscale) interpolation; depth and mask nearest, so depth
    is never blended across object edges.
    """

    width: int
    height: int
    mode: str = "resize"
    random_crop: bool = False
    flip_probability: float = 0.0

    def __post_init__(self):
        if self.mode not in ("resize", "cover_crop", "none"):
            raise ValueError(f"mode must be resize, cover_crop or none, got {self.mode!r}")
        if self.mode != "none" and (self.width % 16 or self.height % 16):
            raise ValueError(f"training size must be a multiple of 16, got {self.width}x{self.height}")

    def __call__(self, rgb: np.ndarray, depth: np.ndarray, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
        h, w = depth.shape
        if self.mode == "resize":
            rgb, depth = _resize_pair(rgb, depth, self.width, self.height)
        elif self.mode == "cover_crop":
            scale = max(self.width / w, self.height / h)
            new_w, new_h = max(self.width, round(w * scale)), max(self.height, round(h * scale))
            rgb, depth = _resize_pair(rgb, depth, new_w, new_h)
            if self.random_crop:
                top = int(rng.integers(0, new_h - self.height + 1))
                left = int(rng.integers(0, new_w - self.width + 1))
            else:
                top, left = (new_h - self.height) // 2, (new_w - self.width) // 2
            rgb = rgb[top:top + self.height, left:left + self.width]
            depth = depth[top:top + self.height, left:left + self.width]
        if self.flip_probability > 0 and rng.random() < self.flip_probability:
            rgb, depth = rgb[:, ::-1], depth[:, ::-1]
        return np.ascontiguousarray(rgb), np.ascontiguousarray(depth)


def _resize_pair(rgb: np.ndarray, depth: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = depth.shape
    if (h, w) == (height, width):
        return rgb, depth
    shrink = width * height < w * h
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    depth = resize_nearest(depth, height, width)
    return rgb, depth


# --------------------------------------------------------------------------------------------
# datasets


class DepthFrames(Dataset):
    """Base class: ``records`` (one per sample) and a ``load(record) -> (name, rgb, depth)``
    returning uint8 RGB and depth in metres with NaN invalid."""

    def __init__(self, transform: ResizeCrop | None = None, seed: int = 0):
        self.transform = transform
        self.seed = seed
        self.records: list[Any] = []

    def __len__(self) -> int:
        return len(self.records)

    def load(self, record: Any) -> tuple[str, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, rgb, depth = self.load(self.records[index])
        if rgb.shape[:2] != depth.shape:
            raise SampleError(f"{name}: image {rgb.shape[1]}x{rgb.shape[0]} and depth "
                              f"{depth.shape[1]}x{depth.shape[0]} differ in size")
        if self.transform is not None:
            # torch's RNG is seeded per worker and epoch by the DataLoader: new crops every epoch
            rng = np.random.default_rng((self.seed, index, int(torch.randint(0, 2**62, ()))))
            rgb, depth = self.transform(rgb, depth, rng)
        if rgb.shape[0] % 16 or rgb.shape[1] % 16:
            raise SampleError(f"{name}: size {rgb.shape[1]}x{rgb.shape[0]} is not a multiple of 16; "
                              "add a resize to this dataset's config")
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            raise SampleError(f"{name}: no valid depth pixel")
        return {
            "image": torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0,
            "depth": torch.from_numpy(np.where(valid, depth, 0.0).astype(np.float32))[None],
            "mask": torch.from_numpy(valid)[None],
            "name": name,
        }


def _sorted_glob(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern))


def _no_samples(kind: str, root: Path, pattern: str) -> SampleError:
    return SampleError(f"{kind}: no samples under {root} (looked for {pattern})")


class HypersimDataset(DepthFrames):
    """Hypersim (raw release layout). ``split_csv`` (``metadata_images_split_scene_v1.csv``) and
    ``split`` select the official train/val/test partition; otherwise every frame found."""

    def __init__(self, root: str, split: str | None = None, split_csv: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        pattern = "*/images/scene_cam_*_final_preview/frame.*.tonemap.jpg"
        allowed = _hypersim_split(split_csv, split) if split_csv else None
        for rgb in _sorted_glob(str(self.root / pattern)):
            rgb = Path(rgb)
            scene = rgb.parents[2].name
            camera = rgb.parent.name[len("scene_"):-len("_final_preview")]
            frame = int(rgb.name.split(".")[1])
            if allowed is not None and (scene, camera, frame) not in allowed:
                continue
            depth = rgb.parent.parent / f"scene_{camera}_geometry_hdf5" / f"frame.{frame:04d}.depth_meters.hdf5"
            self.records.append((f"hypersim:{scene}/{camera}/{frame:04d}", rgb, depth))
        if not self.records:
            raise _no_samples("Hypersim", self.root, pattern)

    def load(self, record):
        import h5py

        name, rgb_path, depth_path = record
        rgb = read_rgb(rgb_path, name)
        with h5py.File(_require(depth_path, name, "depth"), "r") as f:
            distance = np.asarray(f["dataset"], dtype=np.float32)
        depth = distance_to_planar_depth(distance, HYPERSIM_FOCAL_PX * distance.shape[1] / 1024)
        with np.errstate(invalid="ignore"):
            depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        return name, rgb, depth


def _hypersim_split(path: str, split: str | None) -> set[tuple[str, str, int]]:
    import csv

    keep = set()
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("included_in_public_release", "True").strip().lower() != "true":
                continue
            if split and row["split_partition_name"] != split:
                continue
            keep.add((row["scene_name"], row["camera_name"], int(row["frame_id"])))
    return keep


class UrbanSynDataset(DepthFrames):
    """UrbanSyn: ``rgb/rgb_NNNN.png`` + ``depth/depth_NNNN.exr`` (x ``depth_scale`` = metres)."""

    def __init__(self, root: str, depth_scale: float = URBANSYN_DEPTH_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        self.depth_scale = depth_scale
        for rgb in _sorted_glob(str(self.root / "rgb" / "rgb_*.png")):
            stem = Path(rgb).stem[len("rgb_"):]
            self.records.append((f"urbansyn:{stem}", Path(rgb), self.root / "depth" / f"depth_{stem}.exr"))
        if not self.records:
            raise _no_samples("UrbanSyn", self.root, "rgb/rgb_*.png")

    def load(self, record):
        name, rgb_path, depth_path = record
        rgb = read_rgb(rgb_path, name)
        depth = read_depth_file(depth_path, name) * np.float32(self.depth_scale)
        return name, rgb, depth


def read_unrealstereo_extrinsics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(K 3x3, world-to-camera 4x4) of an UnrealStereo4K ``Extrinsics*/NNNNN.txt``."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    K = np.array(lines[0], dtype=np.float64).reshape(3, 3)
    world_to_camera = np.eye(4)
    world_to_camera[:3] = np.array(lines[1], dtype=np.float64).reshape(3, 4)
    return K, world_to_camera


class UnrealStereo4KDataset(DepthFrames):
    """UnrealStereo4K: left (``camera=0``) or right (``1``) frames; depth = fx * baseline / disparity,
    the baseline being the distance between the two cameras' centres."""

    def __init__(self, root: str, camera: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        self.camera = camera
        pattern = f"*/Image{camera}/*.png"
        for rgb in _sorted_glob(str(self.root / pattern)):
            rgb = Path(rgb)
            scene, stem = rgb.parents[1], rgb.stem
            self.records.append((f"unrealstereo4k:{scene.name}/{camera}/{stem}", rgb,
                                 scene / f"Disp{camera}" / f"{stem}.npy",
                                 scene / "Extrinsics0" / f"{stem}.txt", scene / "Extrinsics1" / f"{stem}.txt"))
        if not self.records:
            raise _no_samples("UnrealStereo4K", self.root, pattern)

    def load(self, record):
        name, rgb_path, disp_path, ext0, ext1 = record
        rgb = read_rgb(rgb_path, name)
        disparity = np.squeeze(np.load(_require(disp_path, name, "disparity"))).astype(np.float32)
        K0, w2c0 = read_unrealstereo_extrinsics(_require(ext0, name, "extrinsics"))
        K1, w2c1 = read_unrealstereo_extrinsics(_require(ext1, name, "extrinsics"))
        centre0 = np.linalg.inv(w2c0)[:3, 3]
        centre1 = np.linalg.inv(w2c1)[:3, 3]
        baseline = float(np.linalg.norm(centre1 - centre0))
        K = K0 if self.camera == 0 else K1
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (K[0, 0] * baseline / disparity).astype(np.float32)
            depth[~(np.isfinite(depth) & (disparity > 0))] = np.nan
        return name, rgb, depth


class VKITTI2Dataset(DepthFrames):
    """Virtual KITTI 2: depth PNG16 in centimetres (65535 = sky, kept as far depth)."""

    def __init__(self, root: str, variations: Sequence[str] = ("clone",), cameras: Sequence[int] = (0,), **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        for variation in variations:
            for camera in cameras:
                pattern = f"Scene*/{variation}/frames/rgb/Camera_{camera}/rgb_*.jpg"
                for rgb in _sorted_glob(str(self.root / pattern)):
                    rgb = Path(rgb)
                    frames = rgb.parents[2]
                    stem = rgb.stem[len("rgb_"):]
                    depth = frames / "depth" / f"Camera_{camera}" / f"depth_{stem}.png"
                    scene = frames.parents[1].name
                    self.records.append((f"vkitti2:{scene}/{variation}/Camera_{camera}/{stem}", rgb, depth))
        if not self.records:
            raise _no_samples("VKITTI2", self.root, "Scene*/<variation>/frames/rgb/Camera_<k>/rgb_*.jpg")

    def load(self, record):
        name, rgb_path, depth_path = record
        return name, read_rgb(rgb_path, name), read_depth_file(depth_path, name, png_scale=0.01)


class TartanAirDataset(DepthFrames):
    """TartanAir (left camera). Like the recipe: depth clipped to [0.1, 80] m and sky (> 200 m) set
    just beyond the farthest clipped depth, valid."""

    def __init__(self, root: str, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        pattern = "*/*/P*/image_left/*_left.png"
        for rgb in _sorted_glob(str(self.root / pattern)):
            rgb = Path(rgb)
            trajectory = rgb.parents[1]
            stem = rgb.stem[: -len("_left")]
            depth = trajectory / "depth_left" / f"{stem}_left_depth.npy"
            rel = trajectory.relative_to(self.root)
            self.records.append((f"tartanair:{rel}/{stem}", rgb, depth))
        if not self.records:
            raise _no_samples("TartanAir", self.root, pattern)

    def load(self, record):
        name, rgb_path, depth_path = record
        rgb = read_rgb(rgb_path, name)
        raw = np.squeeze(np.load(_require(depth_path, name, "depth"))).astype(np.float32)
        with np.errstate(invalid="ignore"):
            sky = raw > TARTANAIR_SKY_M
            valid = np.isfinite(raw) & (raw > 0.1) & (raw < MAX_DEPTH_M)
        depth = np.clip(np.nan_to_num(raw, nan=MAX_DEPTH_M, posinf=MAX_DEPTH_M), 0.1, MAX_DEPTH_M)
        depth[sky] = depth.max() + 1.0
        depth[~(valid | sky)] = np.nan
        return name, rgb, depth


class RGBDFolderDataset(DepthFrames):
    """Generic folder: ``<rgb_dir>/<stem>.png|jpg`` with ``<depth_dir>/<stem>.png|exr|npy``.

    PNG depth is uint16 in units of ``png_scale`` metres (millimetres by default, 0 invalid);
    EXR / NPY depth is metres.
    """

    IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
    DEPTH_SUFFIXES = (".png", ".exr", ".npy")

    def __init__(self, root: str, rgb_dir: str = "rgb", depth_dir: str = "depth", png_scale: float = 1e-3,
                 **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root)
        self.png_scale = png_scale
        rgb_files = sorted(p for p in (self.root / rgb_dir).glob("*") if p.suffix.lower() in self.IMAGE_SUFFIXES)
        for rgb in rgb_files:
            self.records.append((f"folder:{self.root.name}/{rgb.stem}", rgb, self.root / depth_dir / rgb.stem))
        if not self.records:
            raise _no_samples("RGB-D folder", self.root, f"{rgb_dir}/*.png|jpg")

    def load(self, record):
        name, rgb_path, depth_stem = record
        candidates = [depth_stem.with_name(depth_stem.name + s) for s in self.DEPTH_SUFFIXES]
        depth_path = next((c for c in candidates if c.is_file()), None)
        if depth_path is None:
            raise SampleError(f"{name}: depth file missing: {depth_stem}.png|exr|npy")
        return name, read_rgb(rgb_path, name), read_depth_file(depth_path, name, self.png_scale)


class SyntheticDataset(DepthFrames):
    """Scenes of :mod:`ppd_ros.synthetic` rendered on the fly, exact planar depth. ``family``:
    ``rooms`` (sample ``i`` is a view of ``Scene.random(scene_seed + i)`` at ``horizontal_fov_deg``)
    or ``varied`` (:func:`~ppd_ros.synthetic.varied.varied_view`: rooms of 3-30 m, tabletops, photo
    textures from the images in ``photo_dir``, changing light, its own field of view)."""

    def __init__(self, num_samples: int, width: int = 128, height: int = 96, scene_seed: int = 0,
                 horizontal_fov_deg: float = 60.0, family: str = "rooms", photo_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        from ppd_ros.synthetic import FAMILIES
        from ppd_ros.synthetic.varied import photo_files

        if family not in FAMILIES:  # refused when the config is read, not at the first sample
            raise ValueError(f"synthetic family must be one of {', '.join(FAMILIES)}, got {family!r}")
        self.records = list(range(scene_seed, scene_seed + num_samples))
        self.width, self.height, self.fov, self.family = width, height, horizontal_fov_deg, family
        self.photos = photo_files(photo_dir)

    def load(self, record):
        from ppd_ros.synthetic import render, synthetic_view

        scene, pose, camera = synthetic_view(record, self.width, self.height, self.family, self.fov, self.photos)
        rgb, depth = render(scene, camera, pose)
        return f"synthetic:{record}", rgb, depth


# --------------------------------------------------------------------------------------------
# rosbags (messages decoded by ppd_ros.msg_decode)


class RosbagDataset(DepthFrames):
    """Frames from a robot log: ``image_topic`` (Image or CompressedImage) paired by header stamp
    (within ``max_time_difference`` s) with ``depth_topic`` (Image 16UC1 mm / 32FC1 m, or
    compressedDepth), or with ``cloud_topic`` (PointCloud2) projected with the intrinsics of
    ``camera_info_topic`` and the LiDAR pose in the camera optical frame
    (``lidar_translation``, ``lidar_rotation_xyzw``: p_camera = R p_lidar + t).

    ``skip_images`` leaves out the first images of the topic (in stamp order) and ``max_images``
    keeps at most that many after them, before ``every_n`` thins them: a log split in time, e.g.
    its first N images held out for validation (``max_images: N``), which are the frames
    ``ppd eval-bag --max-frames N`` evaluates, and the rest trained on (``skip_images: N``).
    The selected messages are read once and kept in memory; pixels are decoded per sample.
    Depth-image pairs must have the image's size; a CameraInfo of another size than the images
    is scaled to them (:meth:`~ppd_ros.geometry.camera.CameraModel.scaled_to`).
    """

    def __init__(self, path: str, image_topic: str, depth_topic: str | None = None,
                 cloud_topic: str | None = None, camera_info_topic: str | None = None,
                 lidar_translation: Sequence[float] = (0.0, 0.0, 0.0),
                 lidar_rotation_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0),
                 max_time_difference: float = 0.05, every_n: int = 1, skip_images: int = 0,
                 max_images: int | None = None, **kwargs):
        super().__init__(**kwargs)
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        if (depth_topic is None) == (cloud_topic is None):
            raise ValueError("give exactly one of depth_topic or cloud_topic")
        if cloud_topic is not None and camera_info_topic is None:
            raise ValueError("cloud_topic needs camera_info_topic for the intrinsics")
        if skip_images < 0 or (max_images is not None and max_images < 1) or every_n < 1:
            raise ValueError(f"rosbag {path}: skip_images must be >= 0, max_images and every_n >= 1 "
                             f"(got {skip_images}, {max_images}, {every_n})")
        self.path = Path(path)
        self.cloud_mode = cloud_topic is not None
        reference_topic = cloud_topic or depth_topic
        topics = [t for t in (image_topic, reference_topic, camera_info_topic) if t]
        messages: dict[str, list[tuple[int, bytes, str]]] = {t: [] for t in topics}
        self._typestore = get_typestore(Stores.ROS2_JAZZY)
        with AnyReader([self.path], default_typestore=self._typestore) as reader:
            found = {c.topic for c in reader.connections}
            missing = [t for t in topics if t not in found]
            if missing:
                raise SampleError(f"rosbag {self.path}: topics {missing} not found (has {sorted(found)})")
            connections = [c for c in reader.connections if c.topic in topics]
            for connection, timestamp, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                stamp = stamp_ns(msg) if hasattr(msg, "header") else timestamp
                messages[connection.topic].append((stamp, msg, connection.msgtype))
        self._camera = None
        if camera_info_topic:
            if not messages[camera_info_topic]:
                raise SampleError(f"rosbag {self.path}: no message on {camera_info_topic}")
            try:
                self._camera = camera_info_to_model(messages[camera_info_topic][0][1])
            except ValueError as error:
                raise SampleError(f"rosbag {self.path}: {camera_info_topic}: {error}") from error
        if self.cloud_mode:
            from ppd_ros.metric.sparse import LidarProjector

            self._projector = LidarProjector(lidar_translation, lidar_rotation_xyzw)
        refs = sorted(messages[reference_topic], key=lambda m: m[0])
        ref_stamps = [m[0] for m in refs]
        tolerance = int(max_time_difference * 1e9)
        images = sorted(messages[image_topic], key=lambda m: m[0])
        images = images[skip_images:None if max_images is None else skip_images + max_images]
        for stamp, msg, msgtype in images[::every_n]:
            i = bisect.bisect_left(ref_stamps, stamp)
            nearby = [j for j in (i - 1, i) if 0 <= j < len(refs)]
            if not nearby:
                continue
            j = min(nearby, key=lambda k: abs(ref_stamps[k] - stamp))
            if abs(ref_stamps[j] - stamp) <= tolerance:
                self.records.append((f"rosbag:{self.path.name}@{stamp}", msg, msgtype, refs[j][1], refs[j][2]))
        if not self.records:
            which = (f"selected {image_topic} message (skip_images {skip_images}, max_images {max_images}, "
                     f"of {len(messages[image_topic])})" if skip_images or max_images else f"{image_topic} message")
            raise SampleError(f"rosbag {self.path}: no {which} has a {reference_topic} message within "
                              f"{max_time_difference} s")

    def load(self, record):
        name, image_msg, image_type, ref_msg, ref_type = record
        try:
            compressed = image_type.endswith("CompressedImage")
            rgb = compressed_to_rgb8(image_msg) if compressed else image_to_rgb8(image_msg)
        except ValueError as error:
            raise SampleError(f"{name}: {error}") from error
        if not rgb.flags.writeable:  # an unpadded rgb8 image is a view of the message's read-only buffer
            rgb = rgb.copy()
        height, width = rgb.shape[:2]
        if self.cloud_mode:
            camera = self._camera
            if (camera.width, camera.height) != (width, height):  # CameraInfo of another resolution
                camera = camera.scaled_to(width, height)
            depth = self._projector.project(pointcloud2_xyz(ref_msg), camera.K, height, width)
        else:
            try:
                compressed = ref_type.endswith("CompressedImage")
                depth = compressed_depth_to_metres(ref_msg) if compressed else depth_image_msg_to_metres(ref_msg)
            except ValueError as error:
                raise SampleError(f"{name}: depth: {error}") from error
        return name, rgb, depth


# --------------------------------------------------------------------------------------------
# construction from config dicts

DATASETS: dict[str, Callable[..., DepthFrames]] = {
    "hypersim": HypersimDataset,
    "urbansyn": UrbanSynDataset,
    "unrealstereo4k": UnrealStereo4KDataset,
    "vkitti2": VKITTI2Dataset,
    "tartanair": TartanAirDataset,
    "folder": RGBDFolderDataset,
    "rosbag": RosbagDataset,
    "synthetic": SyntheticDataset,
}


def build_dataset(spec: dict[str, Any], train: bool, seed: int = 0) -> DepthFrames:
    """A dataset from a config entry ``{format, size: [w, h], resize: resize|cover_crop|none,
    flip: bool, ...reader arguments}``. Training adds random crops and flips (p = 0.5 unless
    ``flip: false``); validation crops centred and never flips."""
    spec = dict(spec)
    kind = spec.pop("format", None)
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset format {kind!r}; choose one of {', '.join(DATASETS)}")
    size = spec.pop("size", None)
    mode = spec.pop("resize", "resize" if size else "none")
    flip = spec.pop("flip", True)
    transform = None
    if size is not None or mode != "none":
        if size is None:
            raise ValueError(f"{kind}: resize {mode!r} needs size: [width, height]")
        transform = ResizeCrop(int(size[0]), int(size[1]), mode, random_crop=train,
                               flip_probability=0.5 if (train and flip) else 0.0)
    return DATASETS[kind](transform=transform, seed=seed, **spec)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep names as a list. Raises SampleError naming samples of unequal size."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        listing = ", ".join(f"{s['name']} {tuple(s['image'].shape[1:])}" for s in samples)
        raise SampleError(f"samples of different sizes in one batch (set size: for each dataset): {listing}")
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "depth", "mask")}
    batch["name"] = [s["name"] for s in samples]
    return batch


class EpochShardSampler(DistributedSampler):
    """Training order: one seeded permutation of the whole dataset per epoch, the same on every
    rank, dealt round-robin to the ranks (disjoint shards, equal length). Resumable mid-epoch:
    :meth:`state_dict` says how many samples of the epoch the ranks consumed together (counted by
    :meth:`batch_consumed`), and after :meth:`load_state_dict` that epoch continues behind them.

    Being a DistributedSampler, Lightning leaves it in place under DDP and calls ``set_epoch``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 data_id: str = ""):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.size = len(dataset)
        self.batch_size = batch_size
        self.data_id = data_id  # fingerprint of the data: a resume on other data starts the epoch afresh
        self.consumed_batches = 0  # batches of this epoch this rank handed to the training step
        self.resume_epoch, self.resume_samples = -1, 0

    def _skipped(self) -> int:
        return self.resume_samples if self.epoch == self.resume_epoch else 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed_batches = 0
        super().set_epoch(epoch)

    def batch_consumed(self) -> None:
        self.consumed_batches += 1

    def __len__(self) -> int:
        return self.size // self.num_replicas  # the whole epoch: Lightning counts a resumed part as done

    def __iter__(self):
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        rest = order[self._skipped():]
        per_rank = len(rest) // self.num_replicas
        return iter(rest[self.rank: per_rank * self.num_replicas: self.num_replicas])

    def state_dict(self) -> dict[str, Any]:
        samples = self._skipped() + self.consumed_batches * self.batch_size * self.num_replicas
        return {"epoch": self.epoch, "samples": samples, "size": self.size, "seed": self.seed,
                "data_id": self.data_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("size"), state.get("seed"), state.get("data_id")) != (self.size, self.seed, self.data_id):
            print("ppd-train: data.train differs from the checkpoint's; the resumed epoch starts from its first "
                  "batch", file=sys.stderr)
            return
        epoch, samples = int(state["epoch"]), int(state["samples"])
        if self.size - samples < self.num_replicas * self.batch_size:  # saved at the end of an epoch
            epoch, samples = epoch + 1, 0
        self.epoch, self.resume_epoch, self.resume_samples = epoch, epoch, samples
        self.consumed_batches = 0


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores on resume (the
    ``state_dict``/``load_state_dict`` interface) through its :class:`EpochShardSampler`."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


class DepthDataModule(L.LightningDataModule):
    """Training / validation loaders from dataset specs (see :func:`build_dataset`).

    Training concatenates all ``train`` specs, in a seeded order per epoch (``seed``) split into
    disjoint shards per DDP rank, last partial batch dropped; a resumed run continues the epoch's
    order where the checkpoint left it. Each ``val`` spec gets its own loader (metrics are logged
    per loader index).
    """

    def __init__(self, train: list[dict[str, Any]], val: list[dict[str, Any]] | None = None,
                 batch_size: int = 4, val_batch_size: int = 1, num_workers: int = 4, seed: int = 0):
        super().__init__()
        self.train_specs = list(train)
        self.val_specs = list(val or [])
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: ConcatDataset | None = None
        self.val_sets: list[DepthFrames] = []
        self.train_sampler: EpochShardSampler | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            if not self.train_specs:
                raise ValueError("data.train lists no dataset")
            self.train_set = ConcatDataset([build_dataset(s, train=True, seed=self.seed) for s in self.train_specs])
        if not self.val_sets and self.val_specs:
            self.val_sets = [build_dataset(s, train=False, seed=self.seed) for s in self.val_specs]

    def _loader_options(self) -> dict[str, Any]:
        return dict(num_workers=self.num_workers, collate_fn=collate, persistent_workers=self.num_workers > 0,
                    pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        data_id = hashlib.sha256(json.dumps(self.train_specs, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.train_sampler = EpochShardSampler(self.train_set, self.batch_size, rank, world_size, self.seed, data_id)
        return ResumableDataLoader(self.train_set, batch_size=self.batch_size, sampler=self.train_sampler,
                                   drop_last=True, **self._loader_options())

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(d, batch_size=self.val_batch_size, shuffle=False, **self._loader_options())
                for d in self.val_sets]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and self.train_sampler is not None:
            self.train_sampler.batch_consumed()
        return batch


__all__ = [
    "DATASETS", "DepthDataModule", "DepthFrames", "EpochShardSampler", "HypersimDataset", "RGBDFolderDataset",
    "ResizeCrop", "ResumableDataLoader", "RosbagDataset",
    "SampleError", "SyntheticDataset", "TartanAirDataset", "UnrealStereo4KDataset", "UrbanSynDataset",
    "VKITTI2Dataset", "build_dataset", "collate", "distance_to_planar_depth", "read_depth_file", "read_exr",
    "read_rgb", "write_exr",
]
