"""Training: official targets/loss (goldens), optimisation, CLI fit/resume, export round trip, readers."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import load_golden

pytest.importorskip("lightning")

from training_helpers import TINY_MODEL, read_records, tiny_run_config  # noqa: E402

from ppd_ros.backends.torch_networks import TINY_DIT  # noqa: E402
from ppd_ros.training import datasets as ds  # noqa: E402
from ppd_ros.training.targets import (  # noqa: E402
    gradient_matching_loss,
    multi_scale_gradient_loss,
    normalise_depth_target,
)


# --- targets and loss against the official functions -------------------------------------------

def test_gt_normalisation_matches_golden():
    tensors, _ = load_golden("functions")
    for depth, out in (("gt.depth", "gt.out"), ("gt.depth_const", "gt.out_const")):
        target, mask = normalise_depth_target(tensors[depth], tensors["gt.mask"])
        torch.testing.assert_close(target, tensors[out], atol=1e-6, rtol=0)
        assert mask.dtype == torch.bool and torch.equal(mask, tensors["gt.mask"])


def test_gt_normalisation_range_and_empty_sample():
    depth = torch.rand(1, 1, 8, 8) * 50 + 1
    target, _ = normalise_depth_target(depth, torch.ones_like(depth, dtype=torch.bool))
    assert target.min() >= -1.0 and target.max() <= 0.5
    far = torch.full((1, 1, 4, 4), 100.0)
    with pytest.raises(ValueError, match="sample 0"):
        normalise_depth_target(far, torch.ones_like(far, dtype=torch.bool))


def test_multi_scale_gradient_loss_matches_golden():
    tensors, _ = load_golden("functions")
    args = [tensors[f"loss.{k}"] for k in ("prediction", "target", "mask")]
    torch.testing.assert_close(multi_scale_gradient_loss(*args), tensors["loss.multi_scale_grad_loss"],
                               atol=1e-5, rtol=1e-6)
    for scale in range(4):
        step = 2**scale
        value = gradient_matching_loss(*(a[:, ::step, ::step] for a in args))
        torch.testing.assert_close(value, tensors[f"loss.grad_loss_scale{scale}"], atol=1e-5, rtol=1e-6)


# --- optimisation --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_batch():
    data = ds.SyntheticDataset(4, width=64, height=48, scene_seed=10)
    return ds.collate([data[i] for i in range(len(data))])


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_few_steps_lower_the_loss(synthetic_batch, stage):
    from ppd_ros.training.module import PPDTrainingModule

    torch.manual_seed(0)
    module = PPDTrainingModule(**TINY_MODEL, stage=stage, lr=3e-3)
    optimiser = module.configure_optimizers()

    def fixed_loss():  # same noise and timesteps before and after
        with torch.no_grad():
            return float(module.compute_losses(synthetic_batch, torch.Generator().manual_seed(99))["loss"])

    before = fixed_loss()
    generator = torch.Generator().manual_seed(1)
    module.train()
    for _ in range(12):
        optimiser.zero_grad()
        module.compute_losses(synthetic_batch, generator)["loss"].backward()
        optimiser.step()
    assert not any(p.grad is not None for p in module.semantic_encoder.parameters())  # frozen
    after = fixed_loss()
    # measured: -5 % (velocity MSE is mostly irreducible noise at this point); 0 % would be no learning
    assert after < 0.97 * before, (before, after)


# --- CLI fit, resume, export into the node's estimator ----------------------------------------

def test_fit_resume_export_round_trip(tmp_path):
    import os
    import stat

    from ppd_ros.backends.base import BackendOptions
    from ppd_ros.backends.torch_backend import TorchImageBackend
    from ppd_ros.model_specs import IMAGE, ModelSpec
    from ppd_ros.nets.exported import EXPORT_FORMAT, load_export, read_export_metadata
    from ppd_ros.training.cli import main
    from ppd_ros.training.export import main as export_main
    from ppd_ros.training.module import load_training_checkpoint

    config, root = tiny_run_config(tmp_path, max_steps=2, num_samples=8)  # 4 steps per epoch
    assert main(["fit", "--config", str(config)]) == 0
    last = root / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert any((root / "tb").rglob("events.out.tfevents.*"))
    assert torch.load(last, weights_only=True)["global_step"] == 2

    # resume mid-epoch from the last checkpoint: the step count and the epoch's data order continue
    assert main(["fit", "--config", str(config), "--trainer.max_steps", "4", "--ckpt_path", "last"]) == 0
    batches = read_records(tmp_path / "probe", event="batch")
    assert [b["step"] for b in batches] == [0, 1, 2, 3]
    names = [name for b in batches for name in b["names"]]
    assert sorted(names) == sorted(f"synthetic:{i}" for i in range(8))  # each sample once: nothing replayed
    assert torch.load(last, weights_only=True)["global_step"] == 4

    out = tmp_path / "export" / "tiny.safetensors"
    assert export_main([str(last), str(out)]) == 0
    for path in (out, out.with_suffix(".json")):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # readable by a node running as another user
    meta = read_export_metadata(out)
    assert meta.format == EXPORT_FORMAT and meta.dit["hidden_size"] == TINY_DIT["hidden_size"]
    assert meta.encoder_family == "da2" and meta.encoder_weights == "embedded" and not meta.is_metric
    assert meta.native_size == (48, 64) and meta.native_area == 48 * 64  # the training resolution
    assert meta.global_step == 4 and meta.source == "last.ckpt"

    module = load_training_checkpoint(last).eval()
    dit, encoder = load_export(out)
    for name, value in module.dit.state_dict().items():
        assert torch.equal(dit.state_dict()[name], value), name

    spec = ModelSpec("tiny", IMAGE, meta.encoder_family, "exported tiny", native_area=meta.native_area)
    backend = TorchImageBackend(dit, encoder, spec, BackendOptions(device="cpu", steps=2, seed=5))
    rgb = ds.SyntheticDataset(1, width=64, height=48, scene_seed=7)[0]["image"]
    rgb_u8 = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    (output,) = backend.push(rgb_u8, None)
    assert output.size == (48, 64)
    image01 = torch.from_numpy(rgb_u8).permute(2, 0, 1)[None].float() / 255.0
    expected = module.predict_relative(image01, steps=2, seed=5)[0, 0]
    assert torch.equal(output.relative, expected)

    # fine-tune from the export with nothing but its path: architecture and encoder from its metadata
    config2, root2 = tiny_run_config(tmp_path / "second", max_steps=1,
                                  model={"dit_weights": str(out), "stage": "finetune", "lr": 1e-4})
    assert main(["fit", "--config", str(config2)]) == 0
    resumed = load_training_checkpoint(root2 / "checkpoints" / "last.ckpt")
    assert resumed.dit_config == dict(meta.dit) and resumed.networks.encoder_weights == str(out)
    for name, value in encoder.state_dict().items():  # the frozen embedded encoder came along unchanged
        assert torch.equal(resumed.semantic_encoder.state_dict()[name], value), name


def test_export_refuses_a_conflicting_architecture(tmp_path):
    from ppd_ros.training.export import write_export
    from ppd_ros.training.module import PPDTrainingModule
    from ppd_ros.training.networks import ModelConfigError

    module = PPDTrainingModule(**TINY_MODEL)
    out = tmp_path / "tiny.safetensors"
    write_export(out, module.dit.state_dict(), module.semantic_encoder.state_dict(),
                 {"dit": module.dit_config, "semantic_encoder": {"family": "da2", "config": TINY_MODEL["encoder"],
                                                                 "weights": "embedded"},
                  "native_size": {"height": 48, "width": 64}})
    with pytest.raises(ModelConfigError, match="differs from the export") as error:
        PPDTrainingModule(dit={**TINY_DIT, "depth": 2}, dit_weights=str(out))
    assert "\n" not in str(error.value)


def test_cpu_precision_fallback(tmp_path):
    from ppd_ros.training.cli import run_cli

    config, _ = tiny_run_config(tmp_path, max_steps=1)
    if torch.cuda.is_available():
        pytest.skip("fallback only applies without CUDA")
    cli = run_cli(["--config", str(config)], run=False)
    assert str(cli.trainer.precision) == "32-true"


# --- dataset readers in each dataset's real layout ---------------------------------------------

def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _read_back(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_hypersim_reader_planar_depth_and_split(tmp_path):
    h5py = pytest.importorskip("h5py")
    h, w = 48, 64
    images = tmp_path / "ai_001_002" / "images"
    distance = np.random.default_rng(1).uniform(1, 10, (h, w)).astype(np.float32)
    distance[0, 0] = np.nan
    for frame in (0, 1):
        _write_rgb(images / "scene_cam_00_final_preview" / f"frame.{frame:04d}.tonemap.jpg", _rgb(h, w, frame))
        (images / "scene_cam_00_geometry_hdf5").mkdir(parents=True, exist_ok=True)
        with h5py.File(images / "scene_cam_00_geometry_hdf5" / f"frame.{frame:04d}.depth_meters.hdf5", "w") as f:
            f["dataset"] = distance.astype(np.float16)
    split = tmp_path / "split.csv"
    split.write_text("scene_name,camera_name,frame_id,included_in_public_release,exclude_reason,"
                     "split_partition_name\nai_001_002,cam_00,0,True,,train\nai_001_002,cam_00,1,True,,val\n")
    data = ds.HypersimDataset(str(tmp_path), split="val", split_csv=str(split))
    assert len(data) == 1
    sample = data[0]
    assert sample["name"] == "hypersim:ai_001_002/cam_00/0001"
    # independent: planar depth = distance * f / |(u - cx, v - cy, f)| with f scaled to the width
    f = 886.81 * w / 1024
    v, u = np.mgrid[0:h, 0:w]
    ray = np.sqrt((u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2 + f**2)
    expected = distance.astype(np.float16).astype(np.float64) * f / ray
    got = sample["depth"][0].numpy()
    assert not sample["mask"][0, 0, 0] and sample["mask"][0].sum() == h * w - 1
    np.testing.assert_allclose(got[1:, 1:], expected[1:, 1:], rtol=1e-5)


def test_urbansyn_reader_exr(tmp_path):
    pytest.importorskip("OpenEXR")
    h, w = 32, 48
    depth_m = np.random.default_rng(2).uniform(2, 300, (h, w)).astype(np.float32)
    _write_rgb(tmp_path / "rgb" / "rgb_0007.png", _rgb(h, w))
    (tmp_path / "depth").mkdir()
    ds.write_exr(tmp_path / "depth" / "depth_0007.exr", depth_m / 1e5)
    sample = ds.UrbanSynDataset(str(tmp_path))[0]
    assert sample["name"] == "urbansyn:0007"
    np.testing.assert_allclose(sample["depth"][0].numpy(), depth_m, rtol=1e-5)
    np.testing.assert_array_equal((sample["image"] * 255).round().byte().permute(1, 2, 0).numpy(),
                                  _read_back(tmp_path / "rgb" / "rgb_0007.png"))


def test_unrealstereo4k_reader_disparity_to_depth(tmp_path):
    h, w = 32, 48
    scene = tmp_path / "00003"
    _write_rgb(scene / "Image0" / "00012.png", _rgb(h, w))
    disparity = np.random.default_rng(3).uniform(1, 40, (h, w)).astype(np.float32)
    disparity[5, 5] = 0
    (scene / "Disp0").mkdir()
    np.save(scene / "Disp0" / "00012.npy", disparity)
    fx, baseline = 1200.0, 0.25
    K = f"{fx} 0 24 0 {fx} 16 0 0 1"
    for cam, x in ((0, 1.0), (1, 1.0 + baseline)):
        (scene / f"Extrinsics{cam}").mkdir()
        # world-to-camera with identity rotation: t = -centre
        (scene / f"Extrinsics{cam}" / "00012.txt").write_text(f"{K}\n1 0 0 {-x} 0 1 0 -2 0 0 1 -3\n")
    sample = ds.UnrealStereo4KDataset(str(tmp_path))[0]
    with np.errstate(divide="ignore"):
        expected = fx * baseline / disparity
    mask = sample["mask"][0].numpy()
    assert not mask[5, 5] and mask.sum() == h * w - 1
    np.testing.assert_allclose(sample["depth"][0].numpy()[mask], expected[mask], rtol=1e-5)


def test_vkitti2_reader_centimetres(tmp_path):
    h, w = 32, 48
    frames = tmp_path / "Scene01" / "clone" / "frames"
    _write_rgb(frames / "rgb" / "Camera_0" / "rgb_00004.jpg", _rgb(h, w))
    cm = np.random.default_rng(4).integers(100, 8000, (h, w)).astype(np.uint16)
    cm[0, :] = 65535  # sky
    (frames / "depth" / "Camera_0").mkdir(parents=True)
    cv2.imwrite(str(frames / "depth" / "Camera_0" / "depth_00004.png"), cm)
    sample = ds.VKITTI2Dataset(str(tmp_path))[0]
    assert sample["name"] == "vkitti2:Scene01/clone/Camera_0/00004"
    np.testing.assert_allclose(sample["depth"][0].numpy(), cm.astype(np.float64) / 100, rtol=1e-6)
    assert sample["mask"].all()


def test_tartanair_reader_sky_and_clip(tmp_path):
    h, w = 32, 48
    trajectory = tmp_path / "abandonedfactory" / "Easy" / "P001"
    _write_rgb(trajectory / "image_left" / "000010_left.png", _rgb(h, w))
    depth = np.random.default_rng(5).uniform(0.5, 60, (h, w)).astype(np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = 1e4, 0.01, 90.0  # sky, too close, beyond 80 m
    (trajectory / "depth_left").mkdir()
    np.save(trajectory / "depth_left" / "000010_left_depth.npy", depth)
    sample = ds.TartanAirDataset(str(tmp_path))[0]
    got, mask = sample["depth"][0].numpy(), sample["mask"][0].numpy()
    assert mask[0, 0] and not mask[1, 1] and not mask[2, 2]
    assert got[0, 0] == pytest.approx(80.0 + 1.0)  # the clipped 90 m is the farthest -> sky just beyond
    keep = np.ones_like(mask)
    keep[0, 0] = keep[1, 1] = keep[2, 2] = False
    np.testing.assert_allclose(got[keep], depth[keep], rtol=1e-6)


@pytest.mark.parametrize("kind", ["png", "npy", "exr"])
def test_rgbd_folder_reader(tmp_path, kind):
    h, w = 32, 48
    _write_rgb(tmp_path / "rgb" / "f001.jpg", _rgb(h, w))
    (tmp_path / "depth").mkdir()
    metres = np.random.default_rng(6).uniform(0.3, 6, (h, w)).astype(np.float32)
    if kind == "png":
        mm = np.round(metres * 1000).astype(np.uint16)
        mm[3, 4] = 0
        cv2.imwrite(str(tmp_path / "depth" / "f001.png"), mm)
        expected = mm / 1000.0
    elif kind == "npy":
        metres[3, 4] = np.nan
        np.save(tmp_path / "depth" / "f001.npy", metres)
        expected = metres
    else:
        pytest.importorskip("OpenEXR")
        metres[3, 4] = 0
        ds.write_exr(tmp_path / "depth" / "f001.exr", metres)
        expected = metres
    sample = ds.RGBDFolderDataset(str(tmp_path))[0]
    mask = sample["mask"][0].numpy()
    assert not mask[3, 4] and mask.sum() == h * w - 1
    np.testing.assert_allclose(sample["depth"][0].numpy()[mask], expected[mask], rtol=1e-6)
    assert set(sample) == {"image", "depth", "mask", "name"}  # no intrinsics: the training step uses none


def test_reader_errors_name_the_sample(tmp_path):
    _write_rgb(tmp_path / "rgb" / "a.png", _rgb(32, 48))
    (tmp_path / "depth").mkdir()
    data = ds.RGBDFolderDataset(str(tmp_path))
    with pytest.raises(ds.SampleError, match="folder:.*/a: depth file missing"):
        data[0]
    np.save(tmp_path / "depth" / "a.npy", np.ones((16, 48), np.float32))
    with pytest.raises(ds.SampleError, match=r"/a: image 48x32 and depth 48x16 differ"):
        data[0]
    with pytest.raises(ds.SampleError, match="no samples"):
        ds.VKITTI2Dataset(str(tmp_path))


def test_resize_crop_and_flip_keep_depth_consistent():
    rgb = _rgb(60, 90)
    depth = np.tile(np.arange(90, dtype=np.float32), (60, 1)) + 1
    rng = np.random.default_rng(0)
    out_rgb, out_depth = ds.ResizeCrop(64, 48, "cover_crop", flip_probability=1.0)(rgb, depth, rng)
    assert out_rgb.shape == (48, 64, 3) and out_depth.shape == (48, 64)
    assert np.all(np.diff(out_depth[0]) <= 0)  # flipped: depth now decreases to the right
    assert set(np.unique(out_depth)) <= set(np.unique(depth))  # nearest: no blended depth values
    # cover 64x48 at the 90x60 aspect: 72x48, then a centred crop of 4 px each side, then the flip
    columns = np.floor((np.arange(4, 68) + 0.5) * 90 / 72).astype(int)
    np.testing.assert_array_equal(out_depth[0], depth[0, columns][::-1])


# --- rosbags -----------------------------------------------------------------------------------

def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _header(ts, stamp_ns, frame):
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame)


def _image(ts, stamp, array, encoding):
    Image = ts.types["sensor_msgs/msg/Image"]
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return Image(header=_header(ts, stamp, "cam"), height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=0, step=array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1),
                 data=data)


def _write_bag(path, messages):
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = _typestore()
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for topic, msgtype, stamp, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], stamp, ts.serialize_cdr(msg, msgtype))


def test_rosbag_reader_depth_image_topic(tmp_path):
    ts = _typestore()
    h, w = 32, 48
    rgbs = [_rgb(h, w, i) for i in range(3)]
    mm = [np.random.default_rng(10 + i).integers(300, 5000, (h, w)).astype(np.uint16) for i in range(3)]
    messages = []
    for i in range(3):
        stamp = 10**9 + i * 100_000_000
        messages.append(("/cam/image", "sensor_msgs/msg/Image", stamp, _image(ts, stamp, rgbs[i], "rgb8")))
        messages.append(("/cam/depth", "sensor_msgs/msg/Image", stamp + 5_000_000,
                         _image(ts, stamp + 5_000_000, mm[i], "16UC1")))
    _write_bag(tmp_path / "bag", messages)
    data = ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image", depth_topic="/cam/depth",
                            max_time_difference=0.01)
    assert len(data) == 3
    sample = data[1]
    np.testing.assert_array_equal((sample["image"] * 255).round().byte().permute(1, 2, 0).numpy(), rgbs[1])
    np.testing.assert_allclose(sample["depth"][0].numpy(), mm[1] / 1000.0, rtol=1e-6)
    with pytest.raises(ds.SampleError, match="within 0.001 s"):
        ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image", depth_topic="/cam/depth",
                         max_time_difference=0.001)
    # a log split in time: image 0 held out (max_images 1), images 1.. trained on (skip_images 1)
    held_out = ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image", depth_topic="/cam/depth",
                                max_images=1)
    rest = ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image", depth_topic="/cam/depth",
                            skip_images=1)
    assert [r[0] for r in held_out.records] + [r[0] for r in rest.records] == [r[0] for r in data.records]
    np.testing.assert_allclose(rest[0]["depth"][0].numpy(), mm[1] / 1000.0, rtol=1e-6)
    with pytest.raises(ds.SampleError, match="skip_images 3"):
        ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image", depth_topic="/cam/depth", skip_images=3)


@pytest.mark.parametrize("info_scale", [1, 4])
def test_rosbag_reader_lidar_projection(tmp_path, info_scale):
    ts = _typestore()
    h, w = 32, 48
    fx, cx, cy = 40.0, 23.5, 15.5
    # points in the camera optical frame 0.3 px right of known pixel centres; LiDAR frame = optical frame.
    # A CameraInfo of 4x the image size must be scaled pixel-centre aligned (cx' = (cx + 0.5) s - 0.5):
    # plain K * s would shift the points by 0.375 px, into the next pixel.
    pixels = [(5, 7, 2.0), (20, 30, 3.5), (10, 40, 7.25)]
    points = np.array([[(u + 0.3 - cx) * z / fx, (v - cy) * z / fx, z] for v, u, z in pixels], dtype=np.float32)
    PointField = ts.types["sensor_msgs/msg/PointField"]
    cloud = ts.types["sensor_msgs/msg/PointCloud2"](
        header=_header(ts, 10**9, "lidar"), height=1, width=len(points),
        fields=[PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")],
        is_bigendian=False, point_step=12, row_step=12 * len(points),
        data=points.reshape(-1).view(np.uint8), is_dense=True)
    CameraInfo = ts.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = ts.types["sensor_msgs/msg/RegionOfInterest"]
    s = info_scale
    K = np.array([fx * s, 0, (cx + 0.5) * s - 0.5, 0, fx * s, (cy + 0.5) * s - 0.5, 0, 0, 1.0])
    info = CameraInfo(header=_header(ts, 10**9, "cam"), height=h * s, width=w * s, distortion_model="plumb_bob",
                      d=np.zeros(5), k=K, r=np.eye(3).reshape(-1),
                      p=np.insert(K, (3, 6, 9), 0.0), binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
    rgb = _rgb(h, w)
    png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].reshape(-1)
    image = CompressedImage(header=_header(ts, 10**9, "cam"), format="png", data=png)
    _write_bag(tmp_path / "bag", [
        ("/cam/info", "sensor_msgs/msg/CameraInfo", 10**9, info),
        ("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", 10**9, image),
        ("/lidar", "sensor_msgs/msg/PointCloud2", 10**9, cloud),
    ])
    data = ds.RosbagDataset(str(tmp_path / "bag"), image_topic="/cam/image/compressed", cloud_topic="/lidar",
                            camera_info_topic="/cam/info")
    sample = data[0]
    np.testing.assert_array_equal((sample["image"] * 255).round().byte().permute(1, 2, 0).numpy(), rgb)
    mask = sample["mask"][0].numpy()
    assert mask.sum() == len(pixels)
    for v, u, z in pixels:
        assert mask[v, u] and sample["depth"][0, v, u].item() == pytest.approx(z, rel=1e-5)


def test_validation_metrics_are_the_evaluation_protocol():
    """Validation AbsRel / delta1: the log-space least-squares fit and metrics of
    ppd_ros.evaluation.metrics, on valid GT below 80 m inside the mask."""
    from ppd_ros.evaluation import metrics as M
    from ppd_ros.training.module import log_space_metrics

    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 20.0, (16, 24))
    mask = np.ones(gt.shape, bool)
    relative = (np.log1p(gt) - 0.3) / 2.0  # an exact affine map of log(depth + 1)
    gt[0, :4] = 90.0  # beyond 80 m, and (below) off the affine map: must not enter the fit
    gt[1, :3] = 0.0  # no GT
    mask[2, :5] = False  # masked out
    relative[0, :4] = relative[1, :3] = relative[2, :5] = 5.0
    abs_rel, delta1, aligned = log_space_metrics(torch.tensor(relative), torch.tensor(gt), torch.tensor(mask))
    assert abs_rel < 1e-9 and delta1 == 1.0
    noisy = relative + rng.normal(0, 0.05, relative.shape)
    abs_rel, delta1, aligned = log_space_metrics(torch.tensor(noisy, dtype=torch.float32), torch.tensor(gt),
                                                 torch.tensor(mask))
    valid = M.gt_valid_mask(gt, mask, max_depth=80.0)
    expected = M.align_log_depth(noisy.astype(np.float32).astype(np.float64), gt, valid)[0]
    np.testing.assert_array_equal(aligned, expected)
    assert (abs_rel, delta1) == (M.abs_rel(expected, gt, valid), M.delta1(expected, gt, valid)) and abs_rel > 0.01
    nothing = log_space_metrics(torch.tensor(relative), torch.zeros(gt.shape), torch.tensor(mask))
    assert np.isnan(nothing[0]) and np.isnan(nothing[1])


def test_build_dataset_from_spec():
    spec = {"format": "synthetic", "num_samples": 2, "width": 80, "height": 60, "size": [64, 48],
            "resize": "cover_crop"}
    data = ds.build_dataset(spec, train=False)
    assert data[0]["image"].shape == (3, 48, 64)
    with pytest.raises(ValueError, match="unknown dataset format"):
        ds.build_dataset({"format": "nope"}, train=True)
    assert json.dumps(spec)  # specs are plain data (YAML/JSON)
