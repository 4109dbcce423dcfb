"""Pinhole camera with lens distortion, built from sensor_msgs/CameraInfo fields (no ROS imports).

Pixel convention (as in ROS image_geometry): the centre of pixel (u, v) is at integer coordinates,
rays are expressed in the optical frame (z forward, x right, y down) with z = 1.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant", "none")
# Number of coefficients each model uses; missing trailing coefficients count as zero.
_MODEL_COEFFICIENTS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4, "none": 0}
# ROS drivers spell "no distortion" in several ways.
_MODEL_ALIASES = {"": "none", "pinhole": "none"}

_RAY_GRID_CACHE_SIZE = 8
_VALIDATED_CACHE_SIZE = 64
_validated_cameras: OrderedDict = OrderedDict()
_validated_lock = threading.Lock()

# validate(): focal lengths between these multiples of the image's larger side (fields of view
# of ~180 degrees down to ~0.0006 degrees), rays at most this slope (89.94 degrees off axis), and
# an undistortion that re-distorts to within this many pixels of where it started.
FOCAL_TO_SIZE_RANGE = (1e-3, 1e5)
MAX_RAY_SLOPE = 1e3
MAX_UNDISTORTION_RESIDUAL_PX = 0.05
_ray_grid_cache: OrderedDict = OrderedDict()
_ray_grid_lock = threading.Lock()


def _as_matrix(values, rows: int, cols: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size != rows * cols:
        raise ValueError(f"{name} must have {rows * cols} values, got {array.size}")
    return array.reshape(rows, cols).copy()


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics of one image stream.

    ``K`` and ``D`` describe the image as it arrives; ``distortion_model`` says how ``D`` is read.
    ``P`` (3x4) is kept when known (CameraInfo.P); for rectified images ``K`` is already ``P[:, :3]``
    and the distortion model is ``"none"``.
    """

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "none"
    P: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "K", _as_matrix(self.K, 3, 3, "K"))
        object.__setattr__(self, "D", np.asarray(self.D, dtype=np.float64).reshape(-1).copy())
        model = _MODEL_ALIASES.get(self.distortion_model, self.distortion_model)
        object.__setattr__(self, "distortion_model", model)
        if self.P is not None:
            object.__setattr__(self, "P", _as_matrix(self.P, 3, 4, "P"))
        for array in (self.K, self.D, self.P):
            if array is not None:
                array.setflags(write=False)

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def pinhole(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "CameraModel":
        """Ideal pinhole camera without distortion."""
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        P = np.hstack([K, np.zeros((3, 1))])
        return cls(width=width, height=height, K=K, D=np.zeros(0), distortion_model="none", P=P)

    @classmethod
    def from_camera_info_fields(
        cls,
        width: int,
        height: int,
        K,
        D,
        R,
        P,
        distortion_model: str,
        binning_x: int = 0,
        binning_y: int = 0,
        roi: tuple[int, int, int, int] = (0, 0, 0, 0),
        rectified: bool = False,
        image_size: tuple[int, int] | None = None,
    ) -> "CameraModel":
        """Camera of the image that arrives with this CameraInfo (sensor_msgs semantics).

        ``rectified=True``: the image is already rectified, so ``P[:, :3]`` is its intrinsic matrix
        and there is no distortion. Otherwise ``K`` and ``D`` apply. ``roi`` = (x_offset, y_offset,
        width, height) in full-resolution pixels crops the image (all zeros / zero size = full image);
        binning 0 or 1 means none, b > 1 divides focal lengths, principal point and size by b.
        Width/height 0 (some drivers leave them unset): taken from ``image_size`` = (width, height)
        of the full-resolution image when given, else kept as 0 and rejected by :meth:`validate`.
        ``R`` (rectification rotation) is accepted for completeness: rays are expressed in the frame
        of the image as delivered, which for raw images is the unrectified optical frame.
        """
        del R  # rays stay in the optical frame of the image as delivered
        if (int(width) == 0 or int(height) == 0) and image_size is not None:
            width, height = image_size
        K = _as_matrix(K, 3, 3, "K")
        P = _as_matrix(P, 3, 4, "P") if P is not None and np.asarray(P).size else None
        model = _MODEL_ALIASES.get(distortion_model, distortion_model)
        if rectified:
            if P is None or not np.any(P[:, :3]):
                raise ValueError("rectified image needs a non-zero CameraInfo.P")
            K = P[:, :3].copy()
            D = np.zeros(0)
            model = "none"
        x_offset, y_offset, roi_width, roi_height = (int(v) for v in roi)
        if roi_width > 0 and roi_height > 0:
            width, height = roi_width, roi_height
            K[0, 2] -= x_offset
            K[1, 2] -= y_offset
            if P is not None:
                P[0, 2] -= x_offset
                P[1, 2] -= y_offset
        bx = max(int(binning_x), 1)
        by = max(int(binning_y), 1)
        if bx > 1 or by > 1:
            # image_geometry divides focal lengths and principal point by the binning factor
            K[0, :] /= bx
            K[1, :] /= by
            if P is not None:
                P[0, :] /= bx
                P[1, :] /= by
            width, height = int(width) // bx, int(height) // by
        return cls(width=width, height=height, K=K, D=np.asarray(D, dtype=np.float64), distortion_model=model, P=P)

    # ----------------------------------------------------------------------------- accessors
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def is_distorted(self) -> bool:
        return self.distortion_model != "none" and bool(np.any(self.D != 0.0))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraModel):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        coefficients = self._coefficients() if self.distortion_model in _MODEL_COEFFICIENTS else self.D
        return (
            self.width,
            self.height,
            self.K.tobytes(),
            self.distortion_model,
            np.asarray(coefficients).tobytes(),
            None if self.P is None else self.P.tobytes(),
        )

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ``ValueError`` with one clear message when the camera cannot be used.

        Besides sizes and finite values: focal lengths must be normal floats within
        :data:`FOCAL_TO_SIZE_RANGE` of the image size, and on a grid of sample pixels the rays must
        be finite, within ~90 degrees of the axis, and (with distortion) the undistortion must
        converge. No numpy warnings are printed. Passing cameras are remembered (cheap per frame).
        """
        key = self._key()
        with _validated_lock:
            if key in _validated_cameras:
                _validated_cameras.move_to_end(key)
                return
        self._validate()
        with _validated_lock:
            _validated_cameras[key] = True
            while len(_validated_cameras) > _VALIDATED_CACHE_SIZE:
                _validated_cameras.popitem(last=False)

    def _validate(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"camera size {self.width}x{self.height} is invalid (CameraInfo width/height must be > 0)"
            )
        if not np.all(np.isfinite(self.K)):
            raise ValueError(f"camera matrix K has non-finite values: {self.K.tolist()}")
        if not (self.fx > 0.0 and self.fy > 0.0):
            raise ValueError(f"focal length must be > 0, got fx={self.fx}, fy={self.fy} (uncalibrated camera?)")
        size = max(self.width, self.height)
        low, high = FOCAL_TO_SIZE_RANGE
        for name, value in (("fx", self.fx), ("fy", self.fy)):
            if value < np.finfo(np.float64).tiny or not low <= value / size <= high:
                raise ValueError(
                    f"focal length {name}={value!r} px is absurd for a {self.width}x{self.height} image (expected "
                    f"{low:g} to {high:g} times the larger side, {low * size:g} to {high * size:g} px); check the "
                    f"calibration")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f"unknown distortion model {self.distortion_model!r}; supported: {', '.join(DISTORTION_MODELS)}"
            )
        if not np.all(np.isfinite(self.D)):
            raise ValueError(f"distortion coefficients D have non-finite values: {self.D.tolist()}")
        if self.P is not None and not np.all(np.isfinite(self.P)):
            raise ValueError(f"projection matrix P has non-finite values: {self.P.tolist()}")
        self._check_rays()

    def _check_rays(self) -> None:
        """Rays of a 9x9 grid of pixels spanning the image: finite, not beyond ~90 degrees off axis
        (|x|, |y| <= :data:`MAX_RAY_SLOPE`), and with distortion a converged undistortion."""
        v, u = np.meshgrid(np.linspace(0, self.height - 1, 9), np.linspace(0, self.width - 1, 9), indexing="ij")
        with np.errstate(all="ignore"):
            yd = (v - self.cy) / self.fy
            xd = (u - self.cx - self.K[0, 1] * yd) / self.fx
            if not (np.all(np.isfinite(xd) & np.isfinite(yd)) and np.abs(xd).max() <= MAX_RAY_SLOPE
                    and np.abs(yd).max() <= MAX_RAY_SLOPE):
                raise ValueError(
                    f"camera matrix K {self.K.tolist()} puts image pixels more than 90 degrees off the optical axis "
                    f"(principal point far outside the {self.width}x{self.height} image or skew absurd)")
            if not self.is_distorted:
                return
            x, y, residual, beyond = self._undistort_checked(xd, yd)
            residual_px = residual * min(self.fx, self.fy)
            bad = ~np.isfinite(residual_px) | (residual_px > MAX_UNDISTORTION_RESIDUAL_PX)
            bad |= ~beyond & ~(np.isfinite(x) & np.isfinite(y)
                               & (np.abs(x) <= MAX_RAY_SLOPE) & (np.abs(y) <= MAX_RAY_SLOPE))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{self.distortion_model} distortion D={self.D.tolist()} cannot be inverted over the "
                f"{self.width}x{self.height} image: at {int(bad.sum())} of {bad.size} sample pixels "
                f"(e.g. u={u[row, col]:.0f}, v={v[row, col]:.0f}) the undistortion does not converge or gives a "
                f"non-finite or absurd ray; check the calibration")

    def _undistort_checked(self, xd: np.ndarray, yd: np.ndarray):
        """(x, y, residual, beyond): :meth:`undistort` plus how far re-distorting misses (xd, yd) in
        normalised units, and (equidistant) where the ray lies beyond 90 degrees (z = 1 rays cannot
        hold it; those pixels are clipped, not wrong)."""
        if self.distortion_model == "equidistant":
            theta_d = np.hypot(xd, yd)
            theta = self._equidistant_theta(theta_d, 20)
            residual = np.abs(self._equidistant_theta_d(theta) - theta_d)
            x, y = self._undistort_equidistant(xd, yd, 20)
            return x, y, residual, theta >= math.pi / 2 - 1e-6
        x, y = self.undistort(xd, yd)
        fx, fy = self.distort(x, y)
        return x, y, np.hypot(fx - xd, fy - yd), np.zeros(x.shape, bool)

    # ----------------------------------------------------------------------------- resizing
    def scaled_to(self, width: int, height: int) -> "CameraModel":
        """The same camera for the image resized to ``width`` x ``height``.

        Pixel centres stay aligned with a resize that maps image corners to corners
        (OpenCV/torch ``align_corners=False``): ``cx' = (cx + 0.5) * sx - 0.5``.
        Distortion coefficients act on normalised coordinates and do not change.
        """
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"cannot scale a camera of size {self.width}x{self.height}")
        if width <= 0 or height <= 0:
            raise ValueError(f"target size {width}x{height} is invalid")
        sx = width / self.width
        sy = height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        P = None
        if self.P is not None:
            P = self.P.copy()
            P[0, 0] *= sx
            P[0, 1] *= sx
            P[0, 3] *= sx
            P[0, 2] = (P[0, 2] + 0.5) * sx - 0.5
            P[1, 1] *= sy
            P[1, 3] *= sy
            P[1, 2] = (P[1, 2] + 0.5) * sy - 0.5
        return replace(self, width=int(width), height=int(height), K=K, P=P)

    # ----------------------------------------------------------------------------- distortion
    def _coefficients(self) -> np.ndarray:
        count = _MODEL_COEFFICIENTS[self.distortion_model]
        coefficients = np.zeros(count)
        n = min(count, self.D.size)
        coefficients[:n] = self.D[:n]
        return coefficients

    def distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward distortion of normalised (z = 1) coordinates, per ``distortion_model``."""
        if self.distortion_model == "none":
            return np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
        c = self._coefficients()
        if self.distortion_model == "equidistant":
            r = np.hypot(x, y)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1.0 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
            scale = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
            return x * scale, y * scale
        k1, k2, p1, p2, k3 = c[:5]
        k4, k5, k6 = c[5:8] if self.distortion_model == "rational_polynomial" else (0.0, 0.0, 0.0)
        r2 = x * x + y * y
        radial = (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1.0 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return xd, yd

    def undistort(self, xd: np.ndarray, yd: np.ndarray, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Inverse of :meth:`distort` by Newton's method (numerical 2x2 Jacobian), float64."""
        xd = np.asarray(xd, dtype=np.float64)
        yd = np.asarray(yd, dtype=np.float64)
        if not self.is_distorted:
            return xd.copy(), yd.copy()
        if self.distortion_model == "equidistant":
            return self._undistort_equidistant(xd, yd, iterations)
        x, y = xd.copy(), yd.copy()
        step = 1e-6
        for _ in range(iterations):
            fx, fy = self.distort(x, y)
            rx, ry = fx - xd, fy - yd
            ax, ay = self.distort(x + step, y)
            bx, by = self.distort(x, y + step)
            j11, j21 = (ax - fx) / step, (ay - fy) / step
            j12, j22 = (bx - fx) / step, (by - fy) / step
            det = j11 * j22 - j12 * j21
            det = np.where(np.abs(det) < 1e-12, 1e-12, det)
            dx = (j22 * rx - j12 * ry) / det
            dy = (j11 * ry - j21 * rx) / det
            x -= dx
            y -= dy
            if np.max(np.abs(dx)) < 1e-13 and np.max(np.abs(dy)) < 1e-13:
                break
        return x, y

    def _equidistant_theta_d(self, theta: np.ndarray) -> np.ndarray:
        c = self._coefficients()
        t2 = theta * theta
        return theta * (1.0 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))

    def _equidistant_theta(self, theta_d: np.ndarray, iterations: int) -> np.ndarray:
        """Angle off axis whose distorted angle is ``theta_d`` (Newton), not clipped."""
        c = self._coefficients()
        theta = theta_d.copy()
        for _ in range(iterations):
            t2 = theta * theta
            f = self._equidistant_theta_d(theta) - theta_d
            df = 1.0 + t2 * (3.0 * c[0] + t2 * (5.0 * c[1] + t2 * (7.0 * c[2] + t2 * 9.0 * c[3])))
            theta = theta - f / np.where(np.abs(df) < 1e-12, 1e-12, df)
        return theta

    def _undistort_equidistant(self, xd, yd, iterations):
        theta_d = np.hypot(xd, yd)
        theta = np.clip(self._equidistant_theta(theta_d, iterations), 0.0, math.pi / 2 - 1e-6)
        scale = np.where(theta_d > 1e-12, np.tan(theta) / np.maximum(theta_d, 1e-12), 1.0)
        return xd * scale, yd * scale

    # ----------------------------------------------------------------------------- rays
    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) of optical-frame points (..., 3), distortion applied."""
        points = np.asarray(points, dtype=np.float64)
        x = points[..., 0] / points[..., 2]
        y = points[..., 1] / points[..., 2]
        xd, yd = self.distort(x, y)
        u = self.K[0, 0] * xd + self.K[0, 1] * yd + self.K[0, 2]
        v = self.K[1, 1] * yd + self.K[1, 2]
        return np.stack([u, v], axis=-1)

    def pixel_rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Rays (..., 3) with z = 1 through pixel coordinates ``u``, ``v`` (float64 numpy)."""
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        yd = (v - self.K[1, 2]) / self.K[1, 1]
        xd = (u - self.K[0, 2] - self.K[0, 1] * yd) / self.K[0, 0]
        x, y = self.undistort(xd, yd)
        return np.stack([x, y, np.ones_like(x)], axis=-1)

    def ray_grid(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-pixel rays (H, W, 3) with z = 1, undistorted; cached per camera, device and dtype.

        The returned tensor is shared through the cache: do not modify it in place.
        """
        self.validate()
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = (self._key(), str(device), dtype)
        with _ray_grid_lock:
            grid = _ray_grid_cache.get(key)
            if grid is not None:
                _ray_grid_cache.move_to_end(key)
                return grid
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        grid = torch.from_numpy(self.pixel_rays(u, v)).to(device=device, dtype=dtype)
        with _ray_grid_lock:
            _ray_grid_cache[key] = grid
            while len(_ray_grid_cache) > _RAY_GRID_CACHE_SIZE:
                _ray_grid_cache.popitem(last=False)
        return grid
