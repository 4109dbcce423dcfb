"""ppd_ros: Pixel-Perfect Depth for ROS 2.

Everything outside ``ppd_ros.ros`` is ROS-free and runs without rclpy.
"""

__version__ = "0.1.0"
