"""PyTorch networks of Pixel-Perfect Depth, loadable from the official checkpoints (no ROS)."""
