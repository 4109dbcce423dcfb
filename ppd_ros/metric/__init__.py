"""Metric depth from PPD's relative log-depth: robust alignment to metric references (dense,
sparse depth images, LiDAR clouds, fixed), and a temporal filter that keeps the scale still.
ROS-free."""
from ppd_ros.metric.alignment import (AlignmentFit, FitStatus, ReferencePoints, RobustFitConfig, fit_log_depth,
                                      fixed_fit, least_squares_scale_shift, relative_to_metres)
from ppd_ros.metric.sparse import LidarProjector, depth_image_points, quaternion_to_matrix
from ppd_ros.metric.temporal import (AlignedFrame, FilteredScaleShift, ScaleShiftFilter, StableAlignment,
                                     TemporalFilterConfig)

__all__ = [
    "AlignedFrame", "AlignmentFit", "FilteredScaleShift", "FitStatus", "LidarProjector", "ReferencePoints",
    "RobustFitConfig", "ScaleShiftFilter", "StableAlignment", "TemporalFilterConfig", "depth_image_points",
    "fit_log_depth", "fixed_fit", "least_squares_scale_shift", "quaternion_to_matrix", "relative_to_metres",
]
