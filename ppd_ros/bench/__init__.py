"""Benchmarks run as `ppd bench NAME`. Each prints its numbers with a ratio against a baseline
measured in the same run; none of them is a test.

Each module has ``add_arguments(parser)`` and ``run(args) -> int`` and imports heavy things in ``run``.
"""

BENCHMARKS = {
    "cloud": ("ppd_ros.bench.cloud", "depth -> filtered PointCloud2 vs Open3D outlier removal"),
    "node": ("ppd_ros.ros.node_bench", "node overhead outside the model per stage; N cameras in one node vs N nodes"),
    "model": ("ppd_ros.bench.model", "image model speed: official-style baseline vs fast paths and ONNX Runtime, "
              "per stage, FLOP, MFU"),
    "video": ("ppd_ros.bench.video", "temporal consistency (TAE, flicker), latency, throughput: image vs video mode"),
    "demo-model": ("ppd_ros.bench.demo_model", "shipped demo model vs constant/row/plane baselines on held-out scenes"),
    "metric": ("ppd_ros.bench.metric", "metric alignment: dense vs sparse AbsRel, scale jitter, step response"),
}
