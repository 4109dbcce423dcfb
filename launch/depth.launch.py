"""Start the ppd_ros depth node (and optionally RViz).

    ros2 launch ppd_ros depth.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info transport:=compressed namespace:=front

Arguments: image, camera_info (input topics; with transport:=compressed the node subscribes to
<image>/compressed), transport (raw | compressed), params_file (node parameters, default
config/depth_node.yaml), namespace (outputs land in <namespace>/depth, .../points, ...), rviz.
Sets FASTRTPS_DEFAULT_PROFILES_FILE to config/fastdds_shm.xml so large depth images and clouds
travel through shared memory instead of being dropped by Fast DDS's small default segment.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("ppd_ros")
    image = LaunchConfiguration("image")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Input image topic (raw sensor_msgs/Image)."),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo topic of the input images."),
        DeclareLaunchArgument("transport", default_value="raw", choices=["raw", "compressed"],
                              description="raw: subscribe to <image>; compressed: to <image>/compressed."),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, "config", "depth_node.yaml"]),
                              description="YAML file of node parameters (use /**: keys)."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and its outputs."),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Also start RViz with config/ppd.rviz."),
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               PathJoinSubstitution([share, "config", "fastdds_shm.xml"])),
        Node(
            package="ppd_ros",
            executable="depth_node",
            name="ppd_depth",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"input_transport": LaunchConfiguration("transport")}],
            remappings=[
                ("image", image),
                ("image/compressed", [image, "/compressed"]),
                ("camera_info", LaunchConfiguration("camera_info")),
            ],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="ppd_rviz",
            arguments=["-d", PathJoinSubstitution([share, "config", "ppd.rviz"])],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
