"""The ``videofolder`` clip dataset: frame folders (no decoder), video files through PyAV when installed."""

from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from jepa_core.api import ClipDataset, MissingDataError, is_clip_dataset
from jepa_core.plugins.video.videofolder import VideoFolder
from jepa_core.registries import ComponentError, Registry


def frame_folder(path, n=12, size=(16, 16), sizes=None):
    """A frame-folder video: frame i is red 10*i, green = 200 - i (so a clip says which frames it took)."""
    path.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (sizes or {}).get(i, size), (10 * i, 200 - i, 7)).save(path / f"f{i:03d}.png")


def tree(root, classes=("cat", "dog"), videos=2, n=12, splits=("train", "val")):
    for split in splits:
        for c in classes:
            for k in range(videos):
                frame_folder(root / split / c / f"v{k}", n=n)


def picked(clip) -> list[int]:
    """Source frame numbers of a clip's frames, read back from their red channel."""
    return [int(f[0, 0, 0]) // 10 for f in clip["frames"]]


def build(root, split="train", **params):
    return VideoFolder(VideoFolder.Config(root=str(root), **params), split)


@pytest.fixture
def registry():
    reg = Registry("datasets")
    reg.register("videofolder", VideoFolder)
    return reg


# ------------------------------------------------------------------ frame folders


def test_reads_frame_folders_as_clips(tmp_path, registry):
    tree(tmp_path)
    for split in ("train", "val"):
        ds = registry.create("videofolder", split, root=str(tmp_path))
        assert isinstance(ds, ClipDataset) and is_clip_dataset(ds)
        assert (ds.num_classes, ds.frames, ds.action_dim, ds.state_dim) == (2, 8, 0, 0)
        assert ds.classes == ["cat", "dog"] and len(ds) == 4
        assert [label for _, label in ds.samples] == [0, 0, 1, 1]
        clip, label = ds[3]
        assert set(clip) == {"frames"} and label == 1
        frames = clip["frames"]
        assert frames.dtype == torch.uint8 and frames.shape == (8, 3, 16, 16)
        assert picked(clip) == list(range(8))
        assert torch.equal(frames[5, :, 0, 0], torch.tensor([50, 195, 7], dtype=torch.uint8))
        assert torch.equal(frames, ds[3][0]["frames"])  # deterministic


def test_frame_step_and_evenly_spaced_clips(tmp_path):
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    ds = build(tmp_path, frames=4, frame_step=2)
    assert len(ds) == 1 and picked(ds[0][0]) == [0, 2, 4, 6]
    # span 7 of 12 frames: starts round(k * 5 / 2) = 0, 3 (2.5 rounds up), 5
    ds = build(tmp_path, frames=4, frame_step=2, clips_per_video=3)
    assert len(ds) == 3
    assert [picked(ds[i][0]) for i in range(3)] == [[0, 2, 4, 6], [3, 5, 7, 9], [5, 7, 9, 11]]
    assert ds.clip_indices(2) == [5, 7, 9, 11]
    ds = build(tmp_path, frames=12, clips_per_video=2)  # the whole video: every clip starts at 0
    assert [picked(ds[i][0]) for i in range(2)] == [list(range(12))] * 2
    with pytest.raises(IndexError, match="out of range"):
        ds[2]


def test_fps_resamples_by_folder_fps(tmp_path):
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    assert picked(build(tmp_path, frames=4, fps=15.0)[0][0]) == [0, 2, 4, 6]  # 30 -> 15 fps
    assert picked(build(tmp_path, frames=4, fps=20.0)[0][0]) == [0, 2, 3, 5]  # every 1.5 frames, halves up
    assert picked(build(tmp_path, frames=4, fps=60.0)[0][0]) == [0, 1, 1, 2]  # faster than the video: repeats
    assert picked(build(tmp_path, frames=4, fps=5.0, folder_fps=10.0)[0][0]) == [0, 2, 4, 6]
    ds = build(tmp_path, frames=3, fps=10.0, clips_per_video=2)  # step 3, span 7: starts 0 and 5
    assert [picked(ds[i][0]) for i in range(2)] == [[0, 3, 6], [5, 8, 11]]


def test_hidden_and_non_video_entries_are_ignored(tmp_path):
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    (tmp_path / "train" / "a" / "notes.txt").write_text("not a video")
    (tmp_path / "train" / "a" / ".cache").mkdir()
    (tmp_path / "train" / "a" / "v0" / "thumbs.db").write_text("x")
    (tmp_path / "train" / ".trash").mkdir()
    ds = build(tmp_path)
    assert len(ds) == 1 and ds.classes == ["a"]


# ------------------------------------------------------------------ errors


def test_config_errors_name_the_key(tmp_path, registry):
    with pytest.raises(ValueError, match="at most one of 'fps'.*'frame_step'") as info:
        VideoFolder.Config(root="x", fps=10.0, frame_step=2)
    assert info.value.args[1].name == "fps"
    with pytest.raises(ComponentError, match="'fps'.*'frame_step'") as info:
        registry.create("videofolder", "train", root=str(tmp_path), fps=10.0, frame_step=2)
    assert info.value.key == "fps"
    for key, value in [("frames", 0), ("frame_step", 0), ("clips_per_video", -1), ("fps", 0.0),
                       ("fps", float("inf")), ("folder_fps", -1.0)]:
        with pytest.raises(ComponentError) as info:
            registry.create("videofolder", "train", root=str(tmp_path), **{key: value})
        assert info.value.key == key
    with pytest.raises(ComponentError, match="needs parameter 'root'"):
        registry.create("videofolder", "train")
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    with pytest.raises(ValueError, match="split must be one of"):
        build(tmp_path, split="test")


def test_missing_and_empty_folders(tmp_path):
    layout = rf"expected {tmp_path}/train/<class>/<video> where each video is a file"
    with pytest.raises(MissingDataError, match=rf"{tmp_path}/train does not exist; {layout}"):
        build(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(MissingDataError, match=rf"no class folders \(so no videos\) in {tmp_path}/train; {layout}"):
        build(tmp_path)
    frame_folder(tmp_path / "train" / "a" / "v0")
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / "readme.txt").write_text("")
    with pytest.raises(MissingDataError, match=rf"class folder {tmp_path}/train/b holds no videos; {layout}"):
        build(tmp_path)
    (tmp_path / "train" / "b" / "v0").mkdir()
    with pytest.raises(ValueError, match=rf"frame folder {tmp_path}/train/b/v0 holds no frame images"):
        build(tmp_path)


def test_train_and_val_must_share_class_folders(tmp_path):
    tree(tmp_path, classes=("cat", "dog"), splits=("train",))
    tree(tmp_path, classes=("cat", "emu"), splits=("val",))
    with pytest.raises(ValueError, match="same class folders"):
        build(tmp_path, split="val")


def test_clip_longer_than_a_video(tmp_path):
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    frame_folder(tmp_path / "train" / "a" / "short", n=5)
    build(tmp_path, frames=5)
    with pytest.raises(ValueError, match=rf"{tmp_path}/train/a/short has 5 frames but a clip of "
                                         r"frames=3 x frame_step=3 needs 7$"):
        build(tmp_path, frames=3, frame_step=3)
    with pytest.raises(ValueError, match=r"short has 5 frames but a clip of frames=4 at fps=15.0 from 30 fps "
                                         r"\(one every 2 frames\) needs 7$"):
        build(tmp_path, frames=4, fps=15.0)


def test_frames_of_different_sizes_name_the_file(tmp_path):
    frame_folder(tmp_path / "train" / "a" / "v0", n=6, sizes={3: (16, 12)})
    ds = build(tmp_path, frames=3)  # frames 0-2: one size
    assert ds[0][0]["frames"].shape == (3, 3, 16, 16)
    ds = build(tmp_path, frames=3, frame_step=2)  # 0, 2, 4: still fine
    ds[0]
    ds = build(tmp_path, frames=4)
    with pytest.raises(ValueError, match=rf"{tmp_path}/train/a/v0/f003.png is 16x12 but the clip's first frame "
                                         r"is 16x16"):
        ds[0]


def test_unreadable_frame_names_the_file(tmp_path):
    frame_folder(tmp_path / "train" / "a" / "v0", n=4)
    (tmp_path / "train" / "a" / "v0" / "f001.png").write_bytes(b"not a png")
    ds = build(tmp_path, frames=4)
    with pytest.raises(ValueError, match=rf"cannot read frame {tmp_path}/train/a/v0/f001.png"):
        ds[0]


def test_video_file_without_pyav_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    tree(tmp_path, classes=("a",), videos=1, splits=("train",))
    build(tmp_path)  # frame folders alone need no decoder
    (tmp_path / "train" / "a" / "clip.MP4").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=rf"{tmp_path}/train/a/clip.MP4 is a video file .* needs PyAV.*"
                                         r"pip install av \(or pip install 'jepa-core\[video\]'\)") as info:
        build(tmp_path)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ video files (PyAV)


def encode(path, n=12, rate=10, codec="ffv1", pix_fmt="bgr0"):
    """A 16x16 video whose frame i is red 20*i (ffv1 in .mkv: lossless and no frame count in the metadata)."""
    av = pytest.importorskip("av")
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = 16
        stream.pix_fmt = pix_fmt
        for i in range(n):
            a = np.zeros((16, 16, 3), np.uint8)
            a[..., 0], a[..., 1] = 20 * i, 255 - 20 * i
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def red(clip) -> list[int]:
    return [round(float(f[0].float().mean()) / 20) for f in clip["frames"]]


def test_video_files_decode_the_clip_frames(tmp_path):
    encode(tmp_path / "train" / "a" / "x.mkv")  # length counted by decoding
    encode(tmp_path / "train" / "b" / "y.mp4", codec="mpeg4", pix_fmt="yuv420p")  # length from metadata
    ds = build(tmp_path, frames=4, frame_step=3, clips_per_video=2)
    assert len(ds) == 4 and ds.num_classes == 2 and [p[0] for p in ds._plans] == [12, 12]
    clip, label = ds[1]
    assert clip["frames"].dtype == torch.uint8 and clip["frames"].shape == (4, 3, 16, 16) and label == 0
    assert red(ds[0][0]) == [0, 3, 6, 9] and red(clip) == [2, 5, 8, 11]
    assert red(ds[3][0]) == [2, 5, 8, 11] and ds[3][1] == 1
    ds = build(tmp_path, frames=3, fps=5.0)  # the videos' own 10 fps: every other frame
    assert red(ds[0][0]) == [0, 2, 4]
    ds = build(tmp_path, frames=3, fps=20.0)  # faster than the video: frames repeat
    assert red(ds[0][0]) == [0, 1, 1]


def test_bad_and_short_video_files_name_the_file(tmp_path):
    encode(tmp_path / "train" / "a" / "x.mkv", n=5)
    with pytest.raises(ValueError, match=rf"{tmp_path}/train/a/x.mkv has 5 frames but a clip of "
                                         r"frames=4 x frame_step=2 needs 7$"):
        build(tmp_path, frames=4, frame_step=2)
    with pytest.raises(ValueError, match=r"x.mkv has 5 frames but a clip of frames=4 at fps=5.0 from 10 fps"):
        build(tmp_path, frames=4, fps=5.0)
    (tmp_path / "train" / "a" / "broken.webm").write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match=rf"cannot decode {tmp_path}/train/a/broken.webm") as info:
        build(tmp_path, frames=2)
    assert "\n" not in str(info.value)
