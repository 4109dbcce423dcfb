"""Depth -> point cloud geometry: camera models, unprojection, flying-pixel filter, packing (no ROS)."""
