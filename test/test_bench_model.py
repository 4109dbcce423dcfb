"""`ppd bench model` and its analytic FLOP counter: the counter against torch's FlopCounterMode
(full-size networks on the meta device, tiny ones on the CPU), and one tiny end-to-end run."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ppd_ros import cli
from ppd_ros.backends.torch_networks import full_size_image_networks, tiny_random_image_networks
from ppd_ros.bench.flops import dit_flops, image_model_flops, vit_flops


def _counted(fn) -> int:
    # the math kernel spells attention as two batched matmuls, which FlopCounterMode counts
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("size", ["full", "tiny"])
def test_flop_counter_equals_torch_flop_counter(size):
    if size == "full":
        dit, encoder = full_size_image_networks("meta")  # shapes only: nothing is computed
        device, batch, height, width = "meta", 1, 768, 1024
    else:
        dit, encoder = tiny_random_image_networks()
        device, batch, height, width = "cpu", 2, 48, 80
    rows, cols = height // 16, width // 16
    x = torch.randn(batch, 4, height, width, device=device)
    semantics = torch.randn(batch, rows * cols, dit.semantic_dim, device=device)
    timestep = torch.tensor(500, dtype=torch.int32, device=device)
    assert _counted(lambda: dit(x, semantics, timestep)) == dit_flops(dit, height, width, batch)
    image = torch.rand(batch, 3, height, width, device=device)
    assert _counted(lambda: encoder(image)) == vit_flops(encoder.pretrained, rows, cols, batch)
    if size == "full":  # the estimate: about 5e13 FLOP per 1024x768 frame at 4 steps
        assert 5.3e13 < image_model_flops(dit, encoder, height, width, steps=4).total < 5.5e13


def test_bench_model_tiny_prints_ratios_stages_and_parity(capsys):
    assert cli.main(["bench", "model", "--size", "tiny", "--device", "cpu", "--width", "96", "--height", "64",
                     "--repeats", "1", "--variants", "baseline,fast,fast+graphs"]) == 0
    out = capsys.readouterr().out
    assert "tiny random networks" in out and "inference 96x64, 4 steps" in out
    assert "peak (2048^3 matmul, best of before and after" in out and "FLOP per call (analytic" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    table = {line.split()[0]: line.split() for line in lines[header + 1: header + 3]}
    assert table["baseline"][5] == "1.00x" and table["fast"][5].endswith("x")
    assert float(table["baseline"][7]) == 0.0 and 0 < float(table["fast"][7]) < 0.1  # max |d| vs fp32
    stages = next(line for line in out.splitlines() if line.startswith("stages (ms)")).split()[2:]
    assert stages == ["decode", "preprocess", "encoder", "step1", "step2", "step3", "step4", "geometry", "packing"]
    assert "fast: attention kernels: cpu-flash x18" in out
    assert "fast+graphs: skipped (needs CUDA)" in out


def test_prepared_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """bench/gpu_check.sh --cpu-smoke: the script the GPU machine runs must not fail on a typo."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(["bash", str(repo / "bench" / "gpu_check.sh"), "--cpu-smoke", "--json",
                             str(tmp_path / "gpu.json")], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ppd_ros GPU check" in result.stdout and "FAIL" not in result.stdout
    rows = json.loads((tmp_path / "gpu.json").read_text())
    assert rows and any("image" in json.dumps(row) for row in rows)
