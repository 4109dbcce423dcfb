"""Run inside a colcon install environment: publish one rendered frame + CameraInfo to the depth
node and print, as JSON, the DepthFrame (depth/frame) the node answers with.

    python depth_frame_probe.py TIMEOUT_S
"""
import json
import sys
import time

import numpy as np
import rclpy
from sensor_msgs.msg import CameraInfo

from ppd_ros.msg import DepthFrame
from ppd_ros.ros.conversions import camera_model_to_info, numpy_to_image
from ppd_ros.ros.qos import make_qos
from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render
from sensor_msgs.msg import Image


def main() -> int:
    timeout = float(sys.argv[1])
    scene = Scene.random(2)
    camera = default_camera(160, 120)
    rgb, _ = render(scene, camera, camera_trajectory(1, 2, scene)[0])
    rclpy.init()
    node = rclpy.create_node("depth_frame_probe")
    received = []
    node.create_subscription(DepthFrame, "depth/frame", received.append, make_qos("reliable", 5))
    image_pub = node.create_publisher(Image, "image", make_qos("reliable", 1))
    info_pub = node.create_publisher(CameraInfo, "camera_info", make_qos("reliable", 1))
    deadline = time.monotonic() + timeout
    while image_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    image = numpy_to_image(rgb, "rgb8")
    image.header.stamp.sec, image.header.stamp.nanosec = 4242, 5
    image.header.frame_id = "probe_optical_frame"
    next_send = 0.0
    while not received and time.monotonic() < deadline:
        if time.monotonic() > next_send:  # repeat: the node may not have matched us yet
            info_pub.publish(camera_model_to_info(camera, image.header))
            image_pub.publish(image)
            next_send = time.monotonic() + 1.0
        rclpy.spin_once(node, timeout_sec=0.05)
    if not received:
        print("no DepthFrame received", file=sys.stderr)
        return 1
    frame = received[0]
    depth = np.frombuffer(bytes(frame.depth.data), np.float32).reshape(frame.depth.height, frame.depth.width)
    print(json.dumps({
        "stamp": [frame.header.stamp.sec, frame.header.stamp.nanosec], "frame_id": frame.header.frame_id,
        "depth_stamp": [frame.depth.header.stamp.sec, frame.depth.header.stamp.nanosec],
        "encoding": frame.depth.encoding, "depth_shape": [frame.depth.height, frame.depth.width],
        "finite_depth": int(np.isfinite(depth).sum()),
        "info_shape": [frame.camera_info.height, frame.camera_info.width],
        "info_k": list(frame.camera_info.k),
        **{name: getattr(frame, name) for name in (
            "is_metric", "metric_source", "scale", "shift", "fit_residual", "model", "steps",
            "inference_time", "latency", "dropped_frames", "skipped_frames", "fit_status", "scale_age",
            "scale_age_frames", "metric_stale")},
    }))
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
