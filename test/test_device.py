"""ppd_ros.device.resolve_device on the torch of this machine (a CPU build in CI)."""
from __future__ import annotations

import pytest
import torch

from ppd_ros.device import DeviceError, resolve_device


def test_auto_and_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_unknown_device_is_one_line():
    with pytest.raises(DeviceError, match=r"^unknown device 'gpu0'; use auto, cpu, cuda or cuda:N$"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a torch build without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_on_a_cpu_build_says_so_and_the_fix(name):
    with pytest.raises(ValueError) as caught:
        resolve_device(name)
    message = str(caught.value)
    assert isinstance(caught.value, DeviceError) and "\n" not in message
    assert f"CUDA requested (device {name!r}) but this torch build ({torch.__version__}) has no CUDA" in message
    assert "install a CUDA build of torch" in message and "use device cpu" in message
