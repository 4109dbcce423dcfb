"""The only part of ppd_ros that imports rclpy and ROS message types."""
