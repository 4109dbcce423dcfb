"""Evaluation: depth metrics, rosbag replay (`ppd eval-bag`) and the standard benchmarks
(`ppd eval-benchmark`). ROS-free: bags are read and written with `rosbags`."""
