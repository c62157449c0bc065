"""Built-in datasets: procedural ``shapes`` and ``motifs`` (offline) and local torchvision datasets.

Contract: ``jepa_core.registries.datasets``. The renderers are in ``synthetic``,
the file-backed datasets in ``files``; only this module holds the hook.
"""

from __future__ import annotations

from jepa_core.api import hookimpl
from jepa_core.plugins.data.files import Cifar10, Cifar100, ImageFolderData, Stl10
from jepa_core.plugins.data.synthetic import Motifs, Shapes


@hookimpl
def jepa_register_datasets(registry):
    registry.register("shapes", Shapes)
    registry.register("motifs", Motifs)
    registry.register("imagefolder", ImageFolderData)
    registry.register("cifar10", Cifar10)
    registry.register("cifar100", Cifar100)
    registry.register("stl10", Stl10)
