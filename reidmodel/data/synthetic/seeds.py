"""Every draw has its own seeded stream, so the images do not depend on the order they are rendered in."""

from __future__ import annotations

import numpy as np

# Top-level keys of the seed, so no two kinds of draw ever share a stream.
KEY_SPLIT, KEY_CAMERA, KEY_TEMPLATE, KEY_IDENTITY, KEY_PLAN, KEY_IMAGE, KEY_STRANGER = range(7)


def rng_for(*key: int) -> np.random.Generator:
    """A generator for one named draw, independent of the order in which draws happen."""
    return np.random.default_rng([int(k) for k in key])
