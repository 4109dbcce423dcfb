"""A frame pipeline result as the node's ROS messages (the one place that builds them)."""
from __future__ import annotations

from ppd_ros.colormap import inverse_depth_rgb
from ppd_ros.pipeline import FrameResult
from ppd_ros.ros.conversions import camera_model_to_info, numpy_to_image, structured_to_pointcloud2


def depth_image(result: FrameResult, header):
    """sensor_msgs/Image 32FC1 of the result's depth (metres, NaN = none)."""
    return numpy_to_image(result.depth, "32FC1", header=header)


def depth_camera_info(result: FrameResult, header):
    """sensor_msgs/CameraInfo of the depth image, or None without a camera."""
    return camera_model_to_info(result.camera, header) if result.camera is not None else None


def point_cloud(result: FrameResult, header):
    """sensor_msgs/PointCloud2 (x y z rgb) of the result, or None without a cloud."""
    return structured_to_pointcloud2(result.cloud, header) if result.cloud is not None else None


def colored_depth(result: FrameResult, header):
    """sensor_msgs/Image rgb8 of the colour-mapped depth."""
    colored = result.colored if result.colored is not None else inverse_depth_rgb(result.depth)
    return numpy_to_image(colored, "rgb8", header=header)


def depth_frame(depth_frame_type, result: FrameResult, header, depth_msg, info_msg, latency: float,
                dropped: int, skipped: int):
    """A ``ppd_ros/DepthFrame`` record of the result."""
    frame = depth_frame_type()
    frame.header = header
    frame.depth = depth_msg
    if info_msg is not None:
        frame.camera_info = info_msg
    for name, value in result.record.depth_frame_fields(latency, dropped, skipped).items():
        setattr(frame, name, value)
    return frame
