"""Datasets: labelled images from a local root (never downloaded).

Built as ``factory(config, split)`` with split "train" or "val". The result
is a ``torch.utils.data.Dataset`` of ``(image, label)`` where image is a PIL
image or a uint8 (3, H, W) tensor, with an integer ``num_classes`` attribute.
Crops and flips are the loader's job, not the dataset's. A dataset may carry
``label_names: dict[str, list]`` of extra per-index label arrays for
multi-task evaluation.
"""

SPLITS = ("train", "val")


class MissingDataError(FileNotFoundError):
    """The files are not where the config says; the message says where they must be."""
