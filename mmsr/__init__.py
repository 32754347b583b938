"""mmsr: teach multimodal models to search only when they need to.

Importing the package is cheap: it pulls in no torch, no transformers and no search backends.
Import the submodule you need (``mmsr.protocol``, ``mmsr.rewards``, ...).
"""

__version__ = "0.1.0"
