"""Video depth with PPVD: the official offline windowing and a causal stream.

Offline (:func:`infer_video`, equal to the official ``infer_video``): frames are resized bilinear
to the DiT size (512x512); windows of 16 frames advance by 13; slots 0-2 of every window after
the first hold the previous window's slots 0, 8, 15 (so slot 0 is always frame 0); the clip is
padded with its last frame; every window starts from the same initial noise; predictions are
resized back bilinear and chained by a least-squares scale/shift fitted on slots 0-2.

Stream (:class:`VideoDepthStream`): the same window structure with a stride S in 1..13: a window
is [3 carried keyframes | 13 - S frames already emitted | S new frames]; S = 13 reproduces the
offline windows. Output depth stays on the window grid (S x S); the window-to-window scale/shift
is fitted there too, whereas the official code fits after resizing back to the input size. The
frame pipeline resizes to the output size (nearest, never smoothed) with the camera scaled alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ppd_ros.metric.alignment import least_squares_scale_shift
from ppd_ros.nets.flow import sample_depth

WINDOW = 16
STRIDE = 13
KEYFRAME_SLOTS = (0, 8, 15)
OVERLAP = len(KEYFRAME_SLOTS)

SemanticsFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Window layout and chaining (pure functions)
# ---------------------------------------------------------------------------------------------

def window_frame_ids(num_frames: int) -> list[list[int]]:
    """Source frame index of each of the 16 slots of every offline window.

    Window 0 holds frames 0..15; window k >= 1 holds the previous window's slots 0, 8, 15, then
    frames 13k+3 .. 13k+15; indices past the clip are the last frame (padding). Equals the
    official layout for clips of >= 4 frames. The official code crashes on 1-3 frames; here they
    give one window padded with the last frame.
    """
    if num_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {num_frames}")
    last = num_frames - 1
    windows = [[min(i, last) for i in range(WINDOW)]]
    num_windows = max(1, math.ceil((num_frames - OVERLAP) / STRIDE))
    for k in range(1, num_windows):
        carried = [windows[-1][s] for s in KEYFRAME_SLOTS]
        fresh = [min(STRIDE * k + i, last) for i in range(OVERLAP, WINDOW)]
        windows.append(carried + fresh)
    return windows


def align_video_windows(windows: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Chain the depth of consecutive offline windows into one sequence (16 + 13*(K-1), H, W).

    ``windows[k]`` is (16, 1, H, W) or (16, H, W). Window 0 is kept; window k's slots 0-2 are
    fitted to [window 0's slot 0, previous aligned slot 8, previous aligned slot 15], the fit is
    applied to the whole window and its slots 3-15 are appended. float32 numpy throughout.
    """
    prepared = [np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, dtype=np.float32)
                for w in windows]
    prepared = [w.reshape(WINDOW, *w.shape[-2:]) for w in prepared]
    aligned = prepared[0]
    out = [aligned]
    for window in prepared[1:]:
        target = np.stack([prepared[0][0], aligned[KEYFRAME_SLOTS[1]], aligned[KEYFRAME_SLOTS[2]]])
        scale, shift = least_squares_scale_shift(window[:OVERLAP], target)
        aligned = (window * scale + shift).astype(np.float32)
        out.append(aligned[OVERLAP:])
    return np.concatenate(out, axis=0)


# ---------------------------------------------------------------------------------------------
# Running one window
# ---------------------------------------------------------------------------------------------

def frames_to_tensor(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """Frames (T, 3, H, W) float32 in [0, 1] from a tensor (T, 3, H, W) in [0, 1], or from
    RGB arrays (T, H, W, 3) / a list of (H, W, 3), uint8 (divided by 255) or float in [0, 1]."""
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frame tensor must be (T, 3, H, W), got {tuple(frames.shape)}")
        return frames.to(torch.float32)
    array = np.stack([np.asarray(f) for f in frames]) if not isinstance(frames, np.ndarray) else frames
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frame arrays must be (T, H, W, 3) RGB, got {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    if array.dtype == np.uint8:
        return tensor.to(torch.float32) / 255.0
    return tensor.to(torch.float32)


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize (align_corners False, no antialias) of (T, C, H, W) to size x size."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_window(frames01: torch.Tensor, semantics_fn: SemanticsFn, dit: torch.nn.Module,
                   noise: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """Relative depth (16, 1, S, S) of one window of frames (16, 3, S, S) in [0, 1].

    The semantics are computed once for the window (Pi3 sees it as one clip) and the DiT is
    sampled from ``noise`` (16, 1, S, S), the same for every window.
    """
    param = next(dit.parameters())
    frames01 = frames01.to(device=param.device)
    semantics = semantics_fn(frames01.to(param.dtype))
    return sample_depth(dit, frames01, semantics, steps=steps, noise=noise)


def initial_noise(size: int, generator: torch.Generator | int | None = 0) -> torch.Tensor:
    """The shared initial latent (16, 1, size, size) float32 (CPU), from a seed or generator."""
    if not isinstance(generator, torch.Generator):
        seed = generator
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
    return torch.randn((WINDOW, 1, size, size), generator=generator, dtype=torch.float32)


def infer_video(frames: np.ndarray | torch.Tensor | Sequence[np.ndarray], semantics_fn: SemanticsFn,
                dit: torch.nn.Module, steps: int = 4,
                noise: torch.Tensor | torch.Generator | int | None = 0) -> np.ndarray:
    """Chained relative depth (T, H, W) float32 of a clip, the official offline procedure.

    Args:
        frames: the clip, see :func:`frames_to_tensor`.
        semantics_fn: Pi3 semantics (e.g. :class:`~ppd_ros.nets.pi3.Pi3Semantics`).
        dit: the :class:`~ppd_ros.nets.dit_video.VideoDiT`; its ``input_size`` is the working size.
        steps: Euler steps per window.
        noise: the shared initial latent (16, 1, S, S), or a seed / generator to draw it.
    """
    clip = frames_to_tensor(frames)
    num_frames, _, height, width = clip.shape
    size = dit.input_size
    if not isinstance(noise, torch.Tensor):
        noise = initial_noise(size, noise)
    small = resize_frames(clip, size)
    predictions = []
    for ids in window_frame_ids(num_frames):
        depth = predict_window(small[ids], semantics_fn, dit, noise, steps).float().cpu()
        predictions.append(F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=False))
    return align_video_windows(predictions)[:num_frames]


# ---------------------------------------------------------------------------------------------
# Causal stream
# ---------------------------------------------------------------------------------------------

@dataclass
class StreamDepth:
    """One output frame of :class:`VideoDepthStream`: its index since the last reset, the tag
    given with it to :meth:`~VideoDepthStream.push` (e.g. its message header) and its relative
    depth (S, S) float32 (CPU tensor) on the window grid."""

    index: int
    tag: Any
    depth: torch.Tensor


@dataclass
class _Keyframe:
    frame: torch.Tensor  # (3, S, S) at the working size
    depth: torch.Tensor  # (S, S) aligned depth at the working size


class VideoDepthStream:
    """Causal video depth: push frames one by one, get each frame's depth once its window ran.

    Windows have 16 slots: [3 carried keyframes | 13 - S frames already emitted | S new
    frames]. A window runs as soon as its S new frames are there (the first one when S + 3
    frames are there: it holds frames 0..S+2 padded with the last frame, like the offline first
    window). Its slots 0-2 are fitted (scale/shift) to [frame 0's depth, the previous window's
    aligned slots 8 and 15], so one scale runs through the stream; the new keyframes are this
    window's slots 0, 8, 15. With S = 13 the windows and the output equal :func:`infer_video`
    up to the resize back to the input size (which the stream leaves to its caller).

    Latency: a frame waits for at most S - 1 later frames (S + 2 at start-up). :meth:`flush`
    runs the pending frames at once (padded with the last frame); :meth:`reset` drops the state
    (large time gap, camera change).

    Args:
        semantics_fn, dit, steps: as :func:`infer_video`.
        stride: S, new frames per window (1..13): smaller is lower latency, more compute/frame.
        noise: the shared initial latent or a seed/generator to draw it (kept across resets).
    """

    def __init__(self, semantics_fn: SemanticsFn, dit: torch.nn.Module, stride: int = STRIDE,
                 steps: int = 4, noise: torch.Tensor | torch.Generator | int | None = 0):
        if not 1 <= stride <= STRIDE:
            raise ValueError(f"stride must be in 1..{STRIDE}, got {stride}")
        self.semantics_fn = semantics_fn
        self.dit = dit
        self.stride = stride
        self.steps = steps
        self.size = dit.input_size
        self.noise = noise if isinstance(noise, torch.Tensor) else initial_noise(self.size, noise)
        self.windows_run = 0
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all frames and keyframes; the next frame is frame 0 of a new sequence."""
        self._frames: dict[int, torch.Tensor] = {}  # index -> (3, S, S), only those still needed
        self._tags: dict[int, Any] = {}
        self._received = 0
        self._emitted = 0
        self._input_size: tuple[int, int] | None = None
        self._keyframes: list[_Keyframe] = []
        self._reference0: torch.Tensor | None = None  # depth of frame 0 (window 0, raw)

    @property
    def pending(self) -> int:
        """Frames pushed but not yet returned."""
        return self._received - self._emitted

    @property
    def started(self) -> bool:
        """Whether the first window has run since the last reset."""
        return self._reference0 is not None

    def frames_needed(self) -> int:
        """How many more frames trigger the next window."""
        new = self.stride + OVERLAP if not self.started else self.stride
        return new - self.pending

    # -- input / output -------------------------------------------------------------------------
    def push(self, frame: np.ndarray | torch.Tensor, tag: Any = None) -> list[StreamDepth]:
        """Add one frame (RGB (H, W, 3) uint8 / float in [0, 1], or a (3, H, W) tensor in [0, 1]).

        Returns the frames whose depth became available (in order; empty most of the time).
        All frames since the last reset must have the same size.
        """
        image = self._to_tensor(frame)
        size = tuple(image.shape[-2:])
        if self._input_size is None:
            self._input_size = size
        elif size != self._input_size:
            raise ValueError(f"frame size changed from {self._input_size} to {size}; flush/reset first")
        self._frames[self._received] = resize_frames(image[None], self.size)[0]
        self._tags[self._received] = tag
        self._received += 1
        if self.frames_needed() <= 0:
            return self._run_window()
        return []

    def flush(self) -> list[StreamDepth]:
        """Run the pending frames now (their window padded with the last frame) and return them."""
        if self.pending == 0:
            return []
        return self._run_window()

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _to_tensor(frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(frame, torch.Tensor):
            if frame.ndim != 3 or frame.shape[0] != 3:
                raise ValueError(f"frame tensor must be (3, H, W), got {tuple(frame.shape)}")
            return frame.to(torch.float32)
        return frames_to_tensor(np.asarray(frame)[None])[0]

    def window_ids(self) -> tuple[list[int], list[int]]:
        """(source frame of each non-keyframe slot, frames this window emits) for the next run."""
        last = self._received - 1
        start = self._emitted
        if not self.started:
            ids = [min(i, last) for i in range(WINDOW)]
            return ids, list(range(start, min(start + self.stride + OVERLAP, self._received)))
        context = WINDOW - OVERLAP - self.stride
        ids = [min(max(i, 0), last) for i in range(start - context, start + self.stride)]
        return ids, list(range(start, min(start + self.stride, self._received)))

    def _run_window(self) -> list[StreamDepth]:
        ids, emit = self.window_ids()
        frames = torch.stack([k.frame for k in self._keyframes] + [self._frames[i] for i in ids])
        depth = predict_window(frames, self.semantics_fn, self.dit, self.noise, self.steps)
        depth = depth.float().cpu()[:, 0]
        self.windows_run += 1

        if not self.started:
            self._reference0 = depth[0].clone()
            slot_of = {i: i for i in emit}
        else:
            target = torch.stack([self._reference0, self._keyframes[1].depth, self._keyframes[2].depth])
            scale, shift = least_squares_scale_shift(depth[:OVERLAP].numpy(), target.numpy())
            depth = (depth * float(scale) + float(shift)).to(torch.float32)
            first_new = WINDOW - self.stride
            slot_of = {i: first_new + (i - emit[0]) for i in emit}
        self._keyframes = [_Keyframe(frames[s], depth[s].clone()) for s in KEYFRAME_SLOTS]

        out = [StreamDepth(i, self._tags.pop(i), depth[slot_of[i]].clone()) for i in emit]
        self._emitted = emit[-1] + 1
        keep_from = self._emitted - (WINDOW - OVERLAP - self.stride)
        for i in [i for i in self._frames if i < keep_from and i < self._received - 1]:
            del self._frames[i]
        return out


__all__ = [
    "KEYFRAME_SLOTS", "STRIDE", "WINDOW", "StreamDepth", "VideoDepthStream", "align_video_windows",
    "frames_to_tensor", "infer_video", "initial_noise", "predict_window",
    "resize_frames", "window_frame_ids",
]
