"""Numbers of the official Pixel-Perfect Depth release that several parts of ppd_ros share."""

INFERENCE_AREA = 1024 * 768  # pixels the image model runs at (aspect kept, sides multiples of 16)
SIZE_MULTIPLE = 16  # the DiT's coarse token size: inference sides are multiples of it
MAX_DEPTH_M = 80.0  # depth cap of the training targets (and of KITTI-style evaluation), metres
VIDEO_WINDOW_SIZE = 512  # side of the square frames of the released video model (PPVD)
# Flying-pixel filter defaults (ppd_ros.geometry.cloud): a point is removed when its depth differs
# from both neighbours along an image axis by more than this fraction, or when its surface is
# seen at more than this angle from the view ray.
DEFAULT_MAX_RELATIVE_JUMP = 0.03
DEFAULT_MAX_GRAZING_ANGLE_DEG = 84.0
