"""The varied scene family of the second demo-model attempt (ppd_ros.synthetic.varied): photo textures,
lighting, object scales, and the training reader that renders it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from ppd_ros.synthetic import Plane, Scene, Texture, default_camera, look_at, render
from ppd_ros.synthetic.varied import object_extent, photo_files, varied_view
from ppd_ros.training.datasets import SyntheticDataset


@pytest.fixture
def photo(tmp_path):
    """A 64x32 photo file: left half red, right half blue (sRGB)."""
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :32] = (0, 0, 255)  # BGR red
    image[:, 32:] = (255, 0, 0)  # BGR blue
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), image)
    return path


def test_photo_texture_shows_the_photo_and_light_scales_it(photo):
    # a wall facing the camera, one photo width = 2 m, no phase shift needed to see both halves
    texture = Texture(color_a=(1.0, 1.0, 1.0), pattern="photo", scale=2.0, seed=0, photo=str(photo))
    wall = Plane(point=(3.0, 0.0, 1.0), normal=(1.0, 0.0, 0.0), texture=texture)
    camera = default_camera(96, 64, 90.0)
    pose = look_at((0.0, 0.0, 1.0), (1.0, 0.0, 1.0))
    rgb, _ = render(Scene(objects=(wall,), ambient=1.0), camera, pose)
    reds = (rgb[..., 0] > 200) & (rgb[..., 2] < 30)
    blues = (rgb[..., 2] > 200) & (rgb[..., 0] < 30)
    assert reds.mean() > 0.2 and blues.mean() > 0.2 and (reds | blues).mean() > 0.95
    dim, _ = render(Scene(objects=(wall,), ambient=1.0, light_color=(0.25, 0.25, 0.25)), camera, pose)
    # linear gain 0.25 -> sRGB 0.25^(1/2.2) = 0.53 of the value
    np.testing.assert_allclose(dim[reds][:, 0] / rgb[reds][:, 0], 0.25 ** (1 / 2.2), atol=0.01)


def test_photo_files_lists_images_and_refuses_an_empty_folder(tmp_path, photo):
    (tmp_path / "notes.txt").write_text("not a photo")
    assert photo_files(tmp_path) == (str(photo),)
    assert photo_files(None) == ()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no .jpg/.png photos"):
        photo_files(empty)


def test_varied_views_span_scales_scene_kinds_and_lights(photo):
    views = [varied_view(seed, (str(photo),)) for seed in range(60)]
    again = varied_view(7, (str(photo),))
    assert again.scene == views[7].scene and np.array_equal(again.pose, views[7].pose)
    tabletop = [v.scene.room.size == (4.0, 4.0, 2.6) for v in views]
    assert 8 <= sum(tabletop) <= 30  # 30 % of the views
    room_objects = [o for v, table in zip(views, tabletop) if not table for o in v.scene.objects]
    extents = [object_extent(o) for o in room_objects]
    assert min(extents) < 0.4 and max(extents) > 5.0 and all(0.05 < e <= 10.0 for e in extents)
    textures = [o.texture for v in views for o in v.scene.objects]
    assert 0.25 < np.mean([t.pattern == "photo" for t in textures]) < 0.55
    assert len({v.scene.ambient for v in views}) == 60 and len({v.horizontal_fov_deg for v in views}) == 60
    # every view has depth everywhere and sees more than one surface
    rgb, depth = render(views[0].scene, default_camera(48, 32, views[0].horizontal_fov_deg), views[0].pose)
    assert np.isfinite(depth).all() and depth.std() > 0.05 and rgb.std() > 5


def test_synthetic_reader_renders_the_varied_family(photo):
    dataset = SyntheticDataset(num_samples=2, width=48, height=32, scene_seed=10, family="varied",
                               photo_dir=str(photo.parent))
    name, rgb, depth = dataset.load(dataset.records[1])
    view = varied_view(11, (str(photo),))
    expected_rgb, expected_depth = render(view.scene, default_camera(48, 32, view.horizontal_fov_deg), view.pose)
    assert name == "synthetic:11" and np.array_equal(rgb, expected_rgb) and np.array_equal(depth, expected_depth)
    with pytest.raises(ValueError, match="family must be one of rooms, varied"):
        SyntheticDataset(num_samples=1, family="outdoor")
