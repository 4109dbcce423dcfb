"""Metric depth from PPD's relative log-depth: robust alignment to metric references (dense,
sparse depth images, LiDAR clouds, fixed), and a temporal filter that keeps the scale still.
ROS-free."""
from ppd_ros.metric.alignment import (AlignmentFit, FitStatus, ReferencePoints, RobustFitConfig, relative_to_metres,
                                      fit_log_depth, fixed_fit, least_squares_scale_shift)
from ppd_ros.metric.sparse import (LidarProjector, depth_image_points, depth_image_to_metres, quaternion_to_matrix,
                                   resample_nearest)
from ppd_ros.metric.temporal import (AlignedFrame, FilteredScaleShift, ScaleShiftFilter, StableAlignment,
                                     TemporalFilterConfig)

__all__ = [
    "AlignedFrame", "AlignmentFit", "FilteredScaleShift", "FitStatus", "LidarProjector", "ReferencePoints",
    "RobustFitConfig", "ScaleShiftFilter", "StableAlignment", "TemporalFilterConfig", "relative_to_metres",
    "depth_image_points", "depth_image_to_metres",
    "fit_log_depth", "fixed_fit", "least_squares_scale_shift", "quaternion_to_matrix", "resample_nearest",
]
