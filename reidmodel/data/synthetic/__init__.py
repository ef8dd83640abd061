"""A procedural two-domain person re-ID benchmark in the Market-1501 folder layout.

Market-1501 and DukeMTMC-reID cannot be shipped, so the project renders a small stand-in that trains on a
CPU in minutes. Each identity has latent attributes (clothes, hair, body, bag), each camera a viewpoint and
a background, and each domain its own imaging style and attribute priors, so that a model trained on one
domain transfers imperfectly to the other. Every image is drawn from a numpy Generator seeded from
(seed, domain, pid, camera, index), so the same arguments always write byte-identical JPEGs.

By concern: ``styles`` (the domains), ``identity`` (who a person is), ``person`` (drawing one), ``render``
(cameras and the finished crop), ``writer`` (the Market-1501 folders and the cache), ``preview`` and ``cli``.

Usage: ``python -m reidmodel.data.synthetic --out DIR [--ids N] [--seed S] [--height H] [--width W]``.
"""

from reidmodel.data.synthetic.cli import main
from reidmodel.data.synthetic.identity import Identity, make_identity
from reidmodel.data.synthetic.person import VIEWS, draw_person
from reidmodel.data.synthetic.preview import describe_domain, write_preview
from reidmodel.data.synthetic.render import Camera, make_camera, render_image
from reidmodel.data.synthetic.styles import (
    DEFAULT_STYLES,
    DUKE_STYLE,
    HAIR_COLOURS,
    MARKET_STYLE,
    PALETTE,
    SKIN_TONES,
    SYNTHETIC_DOMAINS,
    DomainStyle,
)
from reidmodel.data.synthetic.writer import (
    COMPLETE_MARKER,
    FORMAT_VERSION,
    JPEG_QUALITY,
    NAME_PATTERN,
    SPLITS,
    benchmark_folder_name,
    ensure_synthetic,
    generate_benchmark,
    generate_domain,
)

__all__ = [
    "COMPLETE_MARKER",
    "DEFAULT_STYLES",
    "DUKE_STYLE",
    "FORMAT_VERSION",
    "HAIR_COLOURS",
    "JPEG_QUALITY",
    "MARKET_STYLE",
    "NAME_PATTERN",
    "PALETTE",
    "SKIN_TONES",
    "SPLITS",
    "SYNTHETIC_DOMAINS",
    "VIEWS",
    "Camera",
    "DomainStyle",
    "Identity",
    "benchmark_folder_name",
    "describe_domain",
    "draw_person",
    "ensure_synthetic",
    "generate_benchmark",
    "generate_domain",
    "main",
    "make_camera",
    "make_identity",
    "render_image",
    "write_preview",
]
