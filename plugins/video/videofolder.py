"""``videofolder``: labelled clips from local videos, ``root/<split>/<class>/<video>``.

A video is a video file (.mp4, .avi, .mkv, .webm, .mov), decoded through PyAV
(the optional ``av`` package), or a directory of frame images (.png, .jpg,
.jpeg, in name order), which needs no decoder. Every video is probed when the
dataset is built, so a missing decoder, an undecodable file or a video too short
for one clip is a one-line error naming the file before training starts.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import attrs
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from jepa_core.api import MissingDataError, check_split, validators as v

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg")


class _VideoError(ValueError):
    """A one-line error about one video file (raised as is through the decode guards)."""


def _positive_finite(instance, attribute, value) -> None:
    v.positive(instance, attribute, value)
    if not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}", attribute)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _import_av(path: str):
    """PyAV, or a one-line error naming the video file that needs it."""
    try:
        import av
    except ImportError as exc:
        raise ValueError(
            f"videofolder: {path} is a video file and decoding it needs PyAV, which cannot be imported "
            f"({_one_line(exc)}); install it with: pip install av (or pip install 'jepa-core[video]'), "
            f"or store the video as a folder of frame images"
        ) from None
    return av


def _frame_files(folder: str) -> list[str]:
    """The frame images of a frame-folder video, sorted by name."""
    return sorted(
        e.name for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(FRAME_EXTENSIONS)
    )


def _open_stream(container, path: str):
    if not container.streams.video:
        raise _VideoError(f"videofolder: {path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _probe_file(path: str) -> tuple[int, Fraction | None]:
    """(frames, average rate or None) of a video file: metadata, else decoded to count."""
    av = _import_av(path)
    try:
        with av.open(path) as container:
            stream = _open_stream(container, path)
            rate = stream.average_rate
            length = int(stream.frames or 0)
            if length <= 0:  # the container does not record it (e.g. .mkv/.webm): count
                length = sum(1 for _ in container.decode(stream))
    except _VideoError:
        raise
    except Exception as exc:  # av.FFmpegError, OSError, ...: any failure means the file is unusable
        raise _VideoError(f"videofolder: cannot decode {path}: {_one_line(exc)}") from None
    return length, (Fraction(rate) if rate else None)


class VideoFolder(torch.utils.data.Dataset):
    """Clips from class folders of videos (files via PyAV, or folders of frame images).

    ``root/<split>/<class>/<video>``: labels are the sorted class-folder names,
    which must be the same in train and val. Each video gives
    ``clips_per_video`` clips of ``frames`` frames, evenly spaced from its first
    to its last frame; source frames are taken every ``frame_step`` frames, or
    resampled to ``fps`` using the video's own average rate (``folder_fps`` for
    frame folders). Deterministic: clip i is always the same frames.
    """

    @attrs.frozen
    class Config:
        root: str = attrs.field(validator=attrs.validators.instance_of(str))
        #: frames per clip (T)
        frames: int = attrs.field(default=8, validator=v.positive_int)
        #: resample every video to this rate (frames per second); at most one of fps and frame_step
        fps: float | None = attrs.field(default=None, validator=attrs.validators.optional(_positive_finite))
        #: take every frame_step-th source frame; neither fps nor frame_step: 1
        frame_step: int | None = attrs.field(default=None, validator=attrs.validators.optional(v.positive_int))
        #: the rate of frame-folder videos, which record none (used only with fps)
        folder_fps: float = attrs.field(default=30.0, validator=_positive_finite)
        #: clips per video, evenly spaced over it: the dataset has videos * clips_per_video clips
        clips_per_video: int = attrs.field(default=1, validator=v.positive_int)

        def __attrs_post_init__(self):
            if self.fps is not None and self.frame_step is not None:
                raise ValueError(
                    f"give at most one of 'fps' ({self.fps!r}) and 'frame_step' ({self.frame_step!r}): "
                    "fps resamples to a rate, frame_step takes every n-th frame",
                    attrs.fields(type(self)).fps,
                )

    action_dim = 0
    state_dim = 0

    def __init__(self, config: Config, split: str):
        check_split(split)
        self.config = config
        self.split = split
        self.frames = config.frames
        self.clips_per_video = config.clips_per_video
        root = os.path.expanduser(config.root)
        path = os.path.join(root, split)
        self.root = path
        layout = (
            f"expected {path}/<class>/<video> where each video is a file "
            f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of frame images ({', '.join(FRAME_EXTENSIONS)})"
        )
        if not os.path.isdir(path):
            raise MissingDataError(f"videofolder: directory {path} does not exist; {layout}")
        self.classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
        if not self.classes:
            raise MissingDataError(f"videofolder: no class folders (so no videos) in {path}; {layout}")
        other = os.path.join(root, "val" if split == "train" else "train")
        if os.path.isdir(other):
            theirs = sorted(e.name for e in os.scandir(other) if e.is_dir() and not e.name.startswith("."))
            if theirs != self.classes:
                raise ValueError(f"videofolder: {path} and {other} must have the same class folders")
        self.num_classes = len(self.classes)
        #: (path, label) of every video, class by class, in name order
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(path, name)
            videos = sorted(
                e.path for e in os.scandir(folder)
                if not e.name.startswith(".")
                and (e.is_dir() or (e.is_file() and e.name.lower().endswith(VIDEO_EXTENSIONS)))
            )
            if not videos:
                raise MissingDataError(f"videofolder: class folder {folder} holds no videos; {layout}")
            self.samples.extend((video, label) for video in videos)
        #: (source frames, offsets of a clip's frames from its start) of every video
        self._plans = [self._plan(video) for video, _ in self.samples]

    def _plan(self, video: str) -> tuple[int, tuple[int, ...]]:
        """Probe ``video``: its length and which source frames (from a clip's start) a clip takes."""
        cfg = self.config
        if os.path.isdir(video):
            length, rate = len(_frame_files(video)), Fraction(str(cfg.folder_fps))
            if length == 0:
                raise ValueError(
                    f"videofolder: frame folder {video} holds no frame images ({', '.join(FRAME_EXTENSIONS)})"
                )
        else:
            length, rate = _probe_file(video)
        if cfg.fps is None:
            step = cfg.frame_step or 1
            offsets = tuple(i * step for i in range(cfg.frames))
            how = f"frames={cfg.frames} x frame_step={step}"
        else:
            if rate is None or rate <= 0:
                raise ValueError(f"videofolder: {video} records no frame rate, so it cannot be resampled to "
                                 f"fps={cfg.fps}; use frame_step instead")
            ratio = rate / Fraction(str(cfg.fps))  # source frames per clip frame
            offsets = tuple(math.floor(i * ratio + Fraction(1, 2)) for i in range(cfg.frames))
            how = f"frames={cfg.frames} at fps={cfg.fps} from {float(rate):g} fps (one every {float(ratio):g} frames)"
        span = offsets[-1] + 1
        if span > length:
            raise ValueError(f"videofolder: {video} has {length} frames but a clip of {how} needs {span}")
        return length, offsets

    def __len__(self) -> int:
        return len(self.samples) * self.clips_per_video

    def clip_indices(self, index: int) -> list[int]:
        """The source frame numbers (0-based) of clip ``index``'s frames."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip {index} out of range for {self.split} split of {len(self)}")
        video, k = divmod(index, self.clips_per_video)
        length, offsets = self._plans[video]
        free, gaps = length - (offsets[-1] + 1), max(self.clips_per_video - 1, 1)
        start = (2 * k * free + gaps) // (2 * gaps)  # round(k * free / gaps), halves up
        return [start + o for o in offsets]

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        wanted = self.clip_indices(index)
        video, label = self.samples[index // self.clips_per_video]
        if os.path.isdir(video):
            frames = self._read_folder(video, wanted)
        else:
            frames = self._read_file(video, wanted, self._plans[index // self.clips_per_video][0])
        return {"frames": torch.stack(frames)}, label

    @staticmethod
    def _check_size(frames: list[torch.Tensor], frame: torch.Tensor, where: str) -> None:
        if frames and frame.shape != frames[0].shape:
            raise _VideoError(
                f"videofolder: {where} is {frame.shape[2]}x{frame.shape[1]} but the clip's first frame is "
                f"{frames[0].shape[2]}x{frames[0].shape[1]}; all frames of a video must have one size"
            )

    def _read_folder(self, video: str, wanted: list[int]) -> list[torch.Tensor]:
        names = _frame_files(video)
        if wanted[-1] >= len(names):
            raise ValueError(f"videofolder: {video} now has {len(names)} frames, fewer than when it was probed")
        frames: list[torch.Tensor] = []
        for i in wanted:
            file = os.path.join(video, names[i])
            try:
                with Image.open(file) as img:
                    frame = pil_to_tensor(img.convert("RGB"))
            except OSError as exc:
                raise ValueError(f"videofolder: cannot read frame {file}: {_one_line(exc)}") from None
            self._check_size(frames, frame, file)
            frames.append(frame)
        return frames

    def _read_file(self, video: str, wanted: list[int], length: int) -> list[torch.Tensor]:
        """Decode ``video`` up to its last wanted frame, converting only the wanted ones."""
        av = _import_av(video)
        need: dict[int, int] = {}  # source frame -> times it appears (fps above the video's repeats frames)
        for i in wanted:
            need[i] = need.get(i, 0) + 1
        last = wanted[-1]
        frames: list[torch.Tensor] = []
        decoded = 0
        try:
            with av.open(video) as container:
                stream = _open_stream(container, video)
                for n, frame in enumerate(container.decode(stream)):
                    decoded = n + 1
                    if n in need:
                        t = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
                        self._check_size(frames, t, f"frame {n} of {video}")  # a _VideoError
                        frames.extend([t] * need[n])
                    if n >= last:
                        break
        except _VideoError:
            raise
        except Exception as exc:  # av.FFmpegError and friends
            raise _VideoError(f"videofolder: cannot decode {video}: {_one_line(exc)}") from None
        if len(frames) < len(wanted):
            raise ValueError(
                f"videofolder: {video} ended after {decoded} decoded frames, but it was probed as {length} "
                f"(its metadata overstates its length, or it changed) and the clip needs frame {last + 1}"
            )
        return frames
