"""Dataset loaders, selected by name with ``--data.name=NAME``.

A loader is a class built from the ``data`` config node that offers
``train_valid()`` (training data with a validation part carved from it),
``test()`` (used only by ``bin/evaluate.py``), ``input_shape``,
``num_classes`` and ``batch_transform(train)``.  To add one, write
``my_loading.py`` next to ``{{ cookiecutter.__dataset_module }}.py`` and add it to ``DATASETS``.
"""

from __future__ import annotations

from .cifar10 import Cifar10Loader
from .common import Split, carve_validation, one_vs_rest
from .imagefolder import ImageFolderLoader

# isort: split
from .{{ cookiecutter.__dataset_module }} import {{ cookiecutter.dataset_loading_class }}

DATASETS = {
    "iris": {{ cookiecutter.dataset_loading_class }},
    "{{ cookiecutter.dataset_loading_class }}": {{ cookiecutter.dataset_loading_class }},
    "cifar10": Cifar10Loader,
    "imagefolder": ImageFolderLoader,
}

__all__ = ["DATASETS", "Split", "build_dataset", "carve_validation", "one_vs_rest"]


def build_dataset(cfg):
    """The loader named by ``cfg.data.name`` (checked by ``configs.check``) for ``cfg.task``."""
    return DATASETS[cfg.data.name](cfg.data, cfg.task)
