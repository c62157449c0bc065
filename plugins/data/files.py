"""Datasets read from local files: an ImageNet-layout folder, CIFAR-10/100 and STL-10.

Nothing is ever downloaded: they read files already under ``root`` and a missing
file raises :class:`MissingDataError` naming the exact path that must exist.
"""

from __future__ import annotations

import os

import attrs
from torchvision.datasets import CIFAR10, CIFAR100, STL10, ImageFolder

from jepa_core.api import MissingDataError, check_split


def _require_files(name: str, folder: str, files: list[str], what: str) -> None:
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise MissingDataError(f"{name}: {folder} must hold {what}; missing: {', '.join(missing)}")


@attrs.frozen
class _RootConfig:
    root: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: torchvision's md5 check of every file (off: only the files' presence is checked)
    verify_md5: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


class ImageFolderData(ImageFolder):
    """ImageNet-layout class folders under root/train and root/val (torchvision ImageFolder).

    Labels are the sorted class-folder names of the split, so train and val must
    have the same class folders or labels would silently disagree.
    """

    @attrs.frozen
    class Config:
        root: str = attrs.field(validator=attrs.validators.instance_of(str))

    def __init__(self, config: Config, split: str):
        check_split(split)
        root = os.path.expanduser(config.root)
        path = os.path.join(root, split)
        layout = f"expected ImageNet layout {path}/<class>/<image>.JPEG"
        if not os.path.isdir(path):
            raise MissingDataError(f"imagefolder: directory {path} does not exist; {layout}")
        try:
            super().__init__(path)
        except FileNotFoundError as exc:
            raise MissingDataError(f"imagefolder: no usable images in {path} ({exc}); {layout}") from None
        other = os.path.join(root, "val" if split == "train" else "train")
        if os.path.isdir(other):
            theirs = sorted(e.name for e in os.scandir(other) if e.is_dir())
            if theirs != self.classes:
                raise ValueError(f"imagefolder: {path} and {other} must have the same class folders")
        self.num_classes = len(self.classes)


class _LocalTorchvision:
    """Mixin: check the files are there (MissingDataError), then load with download=False.

    torchvision checks every file against the official md5; ``verify_md5: false``
    skips that (only presence is checked), e.g. for re-packed or test files.
    """

    name: str
    archive: str

    def _required(self, split: str, verify: bool) -> list[str]:
        raise NotImplementedError

    def _check_integrity(self) -> bool:
        return super()._check_integrity() if self._verify_md5 else True

    def _open(self, config: _RootConfig, our_split: str, **kwargs) -> None:
        check_split(our_split)
        root = os.path.expanduser(config.root)
        folder = os.path.join(root, self.base_folder)
        _require_files(
            self.name, folder, self._required(our_split, config.verify_md5), f"the files extracted from {self.archive}"
        )
        self._verify_md5 = config.verify_md5
        if not config.verify_md5 and hasattr(self, "meta"):
            self.meta = {**self.meta, "md5": None}  # CIFAR checks its meta file separately
        try:
            super().__init__(root, download=False, **kwargs)
        except RuntimeError:
            raise MissingDataError(
                f"{self.name}: files in {folder} do not match the official md5 checksums "
                f"(corrupt or wrong version); re-extract {self.archive} there, or set verify_md5: false"
            ) from None


class Cifar10(_LocalTorchvision, CIFAR10):
    """CIFAR-10 (32x32, 10 classes) from root/cifar-10-batches-py, python-version batches."""

    Config = _RootConfig
    name, archive = "cifar10", "cifar-10-python.tar.gz"

    def _required(self, split, verify):
        return [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]

    def __init__(self, config: _RootConfig, split: str):
        self._open(config, split, train=split == "train")
        self.num_classes = len(self.classes)


class Cifar100(_LocalTorchvision, CIFAR100):
    """CIFAR-100 (32x32, 100 fine classes) from root/cifar-100-python, python-version files."""

    Config = _RootConfig
    name, archive = "cifar100", "cifar-100-python.tar.gz"
    _required = Cifar10._required
    __init__ = Cifar10.__init__


class Stl10(_LocalTorchvision, STL10):
    """STL-10 (96x96, 10 classes) from root/stl10_binary: train split, test split as val.

    torchvision's md5 check covers unlabeled_X.bin (2.6 GB) too, so with
    verify_md5 on that file must be present even though it is never read.
    """

    Config = _RootConfig
    name, archive = "stl10", "stl10_binary.tar.gz"

    def _required(self, split, verify):
        if verify:
            return [f for f, _ in self.train_list + self.test_list]
        return ["train_X.bin", "train_y.bin"] if split == "train" else ["test_X.bin", "test_y.bin"]

    def __init__(self, config: _RootConfig, split: str):
        self._open(config, split, split="train" if split == "train" else "test")
        self.num_classes = 10
