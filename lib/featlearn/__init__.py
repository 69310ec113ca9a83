"""featlearn: compute routines for the book *Feature Learning, Replicated*.

One module per concept; chapters call these and hold no long algorithms.
"""

from __future__ import annotations

__version__ = "0.1.0"

from featlearn.utils import default_device, seed_everything

__all__ = ["__version__", "default_device", "seed_everything"]
