"""`ppd infer` on real files the tests write (tiny random model, CPU): a bad file is skipped and
counted, bombs and other codecs are refused, folders are searched recursively into `out/infer`, its
own outputs are never read back, and device / weights problems are one line."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ppd_ros.cli import main as ppd_main
from ppd_ros.nets.checkpoints import CheckpointError, read_state_dict
from test_decode_limits import jpeg_bomb

TINY = ["--model", "tiny-random", "--target-area", str(32 * 32), "--steps", "1"]


def _image(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _outputs(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*_depth_*") if p.is_file())


def test_bad_files_are_skipped_counted_and_the_batch_goes_on(tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    cv2.imwrite(str(inputs / "a_good.png"), _image())
    png = cv2.imencode(".png", _image())[1].tobytes()
    (inputs / "b_truncated.png").write_bytes(png[: len(png) // 2])
    (inputs / "c_bomb.jpg").write_bytes(jpeg_bomb(20000, 20000))
    (inputs / "d_not_an_image.jpg").write_bytes(b"hello")
    cv2.imwrite(str(inputs / "e.tiff"), _image())
    cv2.imwrite(str(inputs / "sub" / "z_good.jpg"), _image(seed=1))
    (inputs / "notes.txt").write_text("not an input")

    code = ppd_main(["infer", str(inputs), "--output", str(tmp_path / "out"), *TINY])
    captured = capsys.readouterr()
    assert code == 1  # something was skipped
    assert _outputs(tmp_path / "out") == ["a_good_depth_tiny-random.npy", "a_good_depth_tiny-random.png",
                                          "sub/z_good_depth_tiny-random.npy", "sub/z_good_depth_tiny-random.png"]
    assert "read 2 images and 0 videos, wrote 2 depth maps" in captured.out
    assert "skipped 4 (reasons above); ignored 1 other files" in captured.out
    assert "b_truncated.png could not be decoded: PNG has no IEND chunk: truncated" in captured.err
    assert "c_bomb.jpg is 20000x20000 = 400000000 pixels by its jpeg header, above the limit" in captured.err
    assert "d_not_an_image.jpg could not be decoded" in captured.err
    assert "e.tiff: TIFF images are not read" in captured.err
    assert "Traceback" not in captured.err


def test_default_output_folder_recursion_and_outputs_never_read_back(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "day1").mkdir(parents=True)
    cv2.imwrite("photos/day1/0001.jpg", _image())
    cv2.imwrite("photos/0002.png", _image(seed=2))
    assert ppd_main(["infer", "photos", *TINY]) == 0
    assert _outputs(tmp_path / "out" / "infer") == [
        "0002_depth_tiny-random.npy", "0002_depth_tiny-random.png",
        "day1/0001_depth_tiny-random.npy", "day1/0001_depth_tiny-random.png"]
    assert "to out/infer" in capsys.readouterr().out
    # written beside the inputs, twice: the second run reads the two photos again, not the outputs
    for _ in range(2):
        assert ppd_main(["infer", "photos", "--output", "photos", *TINY]) == 0
    assert len(_outputs(tmp_path / "photos")) == 4
    assert "read 2 images and 0 videos, wrote 2 depth maps" in capsys.readouterr().out


def test_max_pixels_flag_and_videos(tmp_path, capsys):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), _image())
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for seed in range(3):
        writer.write(_image(seed=seed))
    writer.release()

    assert ppd_main(["infer", str(image), str(video), "--max-pixels", str(64 * 48 - 1),
                     "--output", str(tmp_path / "small"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "frame.png is 64x48 = 3072 pixels by its png header, above the limit of 3071 pixels" in err
    assert "(--max-pixels)" in err and "clip.avi has 64x48 frames, above the limit of 3071 pixels" in err
    assert ppd_main(["infer", str(video), "--output", str(tmp_path / "out"), *TINY]) == 0
    assert len(_outputs(tmp_path / "out" / "clip_depth")) == 6
    assert "read 0 images and 1 videos, wrote 3 depth maps" in capsys.readouterr().out


def test_nothing_to_read_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert ppd_main(["infer", str(tmp_path / "empty"), str(tmp_path / "missing"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "missing: no such file or folder" in err and "no JPEG/PNG images or videos found" in err


@pytest.mark.skipif(torch.version.cuda is not None, reason="needs a torch build without CUDA")
def test_cuda_on_a_cpu_torch_is_one_line(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "frame.png"), _image())
    assert ppd_main(["infer", str(tmp_path / "frame.png"), *TINY, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA requested" in err[0] and "has no CUDA" in err[0] and "use device cpu" in err[0]


def test_truncated_weights_name_the_file(tmp_path, capsys):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("ppd.pth", "depth_anything_v2_vitl.pth"):
        torch.save({"w": torch.zeros(4096)}, weights / name)
        data = (weights / name).read_bytes()
        (weights / name).write_bytes(data[: len(data) // 2])
    cv2.imwrite(str(tmp_path / "frame.png"), _image())
    assert ppd_main(["infer", str(tmp_path / "frame.png"), "--model", "ppd-da2", "--weights-dir", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(weights / "ppd.pth") in err[0], err


def test_unreadable_checkpoints_raise_checkpoint_error_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    torch.save({"w": torch.zeros(4096)}, tmp_path / "a.pth")
    save_file({"w": torch.zeros(4096)}, str(tmp_path / "b.safetensors"))
    (tmp_path / "c.pth").write_bytes(b"")
    for name in ("a.pth", "b.safetensors"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    for name in ("a.pth", "b.safetensors", "c.pth"):
        with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {tmp_path / name} \(\d+ bytes\).*"
                                                  r"damaged, truncated or not a checkpoint"):
            read_state_dict(tmp_path / name)


def test_without_weights_is_one_clear_line(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "frame.png"), _image())
    code = ppd_main(["infer", str(tmp_path / "frame.png"), "--weights-dir", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ppd fetch-weights ppd" in err[0]
