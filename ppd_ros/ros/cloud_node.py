"""The cloud node: ppd_ros's flying-pixel filter and organised PointCloud2 for ANY depth sensor.

Subscribes ``depth`` (sensor_msgs/Image 16UC1/mono16 millimetres or 32FC1 metres, 0 / NaN = no
depth, REP 118), its ``camera_info`` and, with ``use_color``, a registered colour ``image`` (any
rgb/bgr/mono encoding, paired by stamp); publishes ``points`` (x y z rgb, organised, NaN where a
point was removed, in the depth image's frame) and diagnostics. ToF and stereo cameras have the
same flying pixels as regressed depth; depth_image_proc's point_cloud_xyzrgb does not filter them.
A bad message is skipped and counted with one error line; the node keeps serving.
"""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ppd_ros.parameters import SPECS, ParamSpec, coerce_value, value_problems
from ppd_ros.pipeline import FrameRejected, StampedBuffer, fit_camera_to_image, stamp_text, stamp_to_ns
from ppd_ros.pipeline.cloud import colour_cloud
from ppd_ros.ros.diagnostics import NodeStats, diagnostic_array, diagnostic_status
from ppd_ros.ros.qos import make_qos

NODE_NAME = "ppd_cloud"
SHARED = ("filter_flying_pixels", "keep_organized", "max_relative_jump", "max_grazing_angle_deg", "sync_tolerance",
          "image_is_rectified", "camera_info_size_mismatch", "input_reliability", "input_depth", "output_reliability",
          "output_depth", "diagnostics_period")
PARAMETERS: tuple[ParamSpec, ...] = tuple(SPECS[name] for name in SHARED) + (
    ParamSpec("use_color", False, "Colour the points from a registered colour image on `image` (same viewpoint "
              "and field of view as the depth image, any resolution), paired by stamp; false: rgb = 0.", "input"),
)


class CloudNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        values, problems = {}, []
        for spec in PARAMETERS:
            descriptor = ParameterDescriptor(description=spec.description, additional_constraints=spec.constraint_text,
                                             dynamic_typing=isinstance(spec.default, float))
            value = coerce_value(spec, self.declare_parameter(spec.name, spec.default, descriptor).value)
            problems += value_problems(spec, value)
            values[spec.name] = value
        if problems:
            raise ValueError("; ".join(problems))
        self.values = values
        self.stats = NodeStats()
        self.infos = StampedBuffer()
        self.colours = StampedBuffer(capacity=8)
        self._logged: dict[str, float] = {}
        in_qos = make_qos(values["input_reliability"], values["input_depth"])
        side_qos = make_qos(values["input_reliability"], max(values["input_depth"], 10))
        self.points = self.create_publisher(PointCloud2, "points", make_qos(values["output_reliability"],
                                                                              values["output_depth"]))
        self.create_subscription(CameraInfo, "camera_info", lambda m: self.infos.add(_stamp(m), m), side_qos)
        if values["use_color"]:
            self.create_subscription(Image, "image", lambda m: self.colours.add(_stamp(m), m), side_qos)
        self.create_subscription(Image, "depth", self._on_depth, in_qos)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(values["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(f"cloud node: depth {self.resolve_topic_name('depth')} -> "
                               f"{self.resolve_topic_name('points')}, colour {'on' if values['use_color'] else 'off'}, "
                               f"flying-pixel filter {'on' if values['filter_flying_pixels'] else 'off'}")

    def _on_depth(self, msg: Image) -> None:
        self.stats.frame_received()
        if self.points.get_subscription_count() == 0:
            self.stats.frame_idle()
            return
        start = time.monotonic()
        try:
            cloud, stages = self._cloud(msg)
        except FrameRejected as error:
            self.stats.frame_skipped()
            self._error(f"skipping depth frame {stamp_text(_stamp(msg))}: {error}")
            return
        publish_start = time.perf_counter()
        self.points.publish(cloud)
        stages["publish"] = time.perf_counter() - publish_start
        self.stats.frame_published(time.monotonic() - start, stages)

    def _cloud(self, msg: Image):
        from ppd_ros.ros.conversions import (ConversionError, camera_info_to_model, image_to_rgb8,
                                             structured_to_pointcloud2)
        from ppd_ros.msg_decode import depth_image_msg_to_metres

        values, stamp = self.values, _stamp(msg)
        start = time.perf_counter()
        try:
            depth = depth_image_msg_to_metres(msg)
        except (ConversionError, ValueError) as error:
            raise FrameRejected(str(error)) from error
        info = self.infos.nearest(stamp, values["sync_tolerance"])  # in the executor thread: no waiting here
        if info is None:
            raise FrameRejected(f"no CameraInfo on {self.resolve_topic_name('camera_info')} within "
                                f"{values['sync_tolerance']} s of its stamp")
        try:
            camera = camera_info_to_model(info, rectified=values["image_is_rectified"])
        except ValueError as error:
            raise FrameRejected(f"paired CameraInfo is unusable: {error}") from error
        camera = fit_camera_to_image(camera, depth.shape[1], depth.shape[0], values["camera_info_size_mismatch"])
        rgb = None
        if values["use_color"]:
            colour = self.colours.nearest(stamp, values["sync_tolerance"])
            if colour is None:
                self._error(f"no colour image on {self.resolve_topic_name('image')} within "
                            f"{values['sync_tolerance']} s of depth {stamp_text(stamp)}: points without colour")
            else:
                try:
                    rgb = image_to_rgb8(colour)
                except ConversionError as error:
                    self._error(f"colour image unusable ({error}): points without colour")
        decode = time.perf_counter() - start
        start = time.perf_counter()
        thresholds = {"max_relative_jump": values["max_relative_jump"] if values["max_relative_jump"] > 0 else None,
                      "max_grazing_angle_deg": values["max_grazing_angle_deg"]
                      if values["max_grazing_angle_deg"] > 0 else None}
        cloud, _ = colour_cloud(depth, camera, rgb, values["filter_flying_pixels"], values["keep_organized"],
                                thresholds)
        geometry = time.perf_counter() - start
        return structured_to_pointcloud2(cloud, msg.header), {"decode": decode, "geometry": geometry}

    def _error(self, text: str) -> None:
        """One line per message kind every 5 s (a broken sensor must not flood the log)."""
        key, now = text.split(":")[0][:60], time.monotonic()
        if now - self._logged.get(key, -1e9) >= 5.0:
            self._logged[key] = now
            self.get_logger().error(text)

    def _publish_diagnostics(self) -> None:
        report = self.stats.report()
        level = DiagnosticStatus.OK if report["published_frames"] else DiagnosticStatus.WARN
        message = f"{report['output_rate_hz']:.1f} Hz" if report["published_frames"] else "no cloud published yet"
        status = diagnostic_status(f"{self.get_name()}: cloud", "ppd_ros", level, message,
                                   dict(report, depth_topic=self.resolve_topic_name("depth"),
                                        camera_info="received" if self.infos.received else "missing"))
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))


def _stamp(msg) -> int:
    return stamp_to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)


def main(args=None) -> int:
    """Entry point of ``ppd-cloud-node`` and ``ros2 run ppd_ros cloud_node``."""
    from ppd_ros.ros.cli_args import ros_args_usable

    if not ros_args_usable("ppd cloud node", sys.argv if args is None else args):
        return 1
    rclpy.init(args=args)
    try:
        node = CloudNode()
    except ValueError as error:
        print(f"ppd cloud node: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
