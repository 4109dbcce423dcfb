"""Run one launch file the way `ros2 launch` does (the ros2launch CLI is not on PyPI):

    python run_launch.py PATH [name:=value ...]

launch.LaunchService + IncludeLaunchDescription(AnyLaunchDescriptionSource(PATH), launch_arguments);
exits with LaunchService.run()'s return code. It makes itself a process group leader: SIGINT to
that group (os.killpg) is what Ctrl-C in a terminal sends to launch and the processes it started."""
from __future__ import annotations

import os
import sys

from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource


def main(argv: list[str]) -> int:
    path, *pairs = argv
    os.setpgid(0, 0)
    arguments = []
    for pair in pairs:
        name, separator, value = pair.partition(":=")
        if not separator:
            sys.exit(f"run_launch.py: expected name:=value, got {pair!r}")
        arguments.append((name, value))
    service = LaunchService(argv=pairs)
    service.include_launch_description(LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=arguments),
    ]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
