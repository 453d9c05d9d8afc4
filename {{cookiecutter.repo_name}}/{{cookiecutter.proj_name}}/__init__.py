"""The {{ cookiecutter.proj_name }} package (see readme.md for what the project is about).

Where things go:
    configs.py          the config schema and the named base configs (iris, cifar10)
    datasets/           data loaders            (edit: add your data here)
    networks/           architectures           (edit: add your networks here)
    training_models/    loss, optimizer, init   (edit: add training strategies here)
    experiment.py       wires the above into the engine
    engine/             command line, training loop, results directory (infrastructure)
"""

__version__ = "0.1.0"
