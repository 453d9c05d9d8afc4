"""Infrastructure: the command line, the training loop and the results directory.

Nothing here imports the project's datasets, networks, training models or
configs; those import from here, and ``experiment.py`` wires them together.
You should rarely need to edit this package.
"""
