"""pip route: installs the same `ppd_ros` Python package that the colcon route installs."""
from setuptools import setup

setup()
