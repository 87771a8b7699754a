"""The installed version of sparsam, ``sparsam.__version__``.

A module of its own so that modules inside the package (the ``"sparsam"`` entry that
``save_backbone`` writes to ``config.json``, the command line's ``--version``) read it without
importing the package root.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sparsam")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
