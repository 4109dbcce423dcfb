"""The frame pipeline: everything between a decoded camera frame and what is published, in one
place for the node, ``ppd eval-bag``, the benches and the demo (no ROS imports)."""
from ppd_ros.pipeline.frame import (CLOUD, COLORED, FrameInput, FrameProcessor, FrameRecord, FrameRejected,
                                    FrameResult, MetricReference, fit_camera_to_image, process_frames)
from ppd_ros.pipeline.pairing import StampedBuffer, stamp_text, stamp_to_ns

__all__ = ["CLOUD", "COLORED", "FrameInput", "FrameProcessor", "FrameRecord", "FrameRejected", "FrameResult",
           "MetricReference", "StampedBuffer", "fit_camera_to_image", "process_frames", "stamp_text", "stamp_to_ns"]
