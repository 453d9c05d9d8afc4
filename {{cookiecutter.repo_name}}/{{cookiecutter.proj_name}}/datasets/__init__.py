"""Dataset loaders, selected by name with ``--data.name=NAME``.

A loader is a class built from the ``data`` config node that offers
``train_valid()`` (training data with a validation part carved from it),
``test()`` (used only by ``bin/evaluate.py``), ``input_shape``,
``num_classes`` and ``batch_transform(train)``.  To add one, write
``my_loading.py`` next to ``{{ cookiecutter.__dataset_module }}.py`` and add it to ``DATASETS``.
"""

from __future__ import annotations

from ..engine.cli import unknown
from .cifar10 import Cifar10Loader
from .common import Split, carve_validation, one_vs_rest

# isort: split
from .{{ cookiecutter.__dataset_module }} import {{ cookiecutter.dataset_loading_class }}

DATASETS = {
    "iris": {{ cookiecutter.dataset_loading_class }},
    "{{ cookiecutter.dataset_loading_class }}": {{ cookiecutter.dataset_loading_class }},
    "cifar10": Cifar10Loader,
}

__all__ = ["DATASETS", "Split", "build_dataset", "carve_validation", "one_vs_rest"]


def build_dataset(cfg):
    """The loader named by ``cfg.name`` (``cfg`` is the ``data`` config node)."""
    if cfg.name not in DATASETS:
        raise unknown("data.name", cfg.name, DATASETS)
    return DATASETS[cfg.name](cfg)
