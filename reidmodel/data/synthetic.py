"""A procedural two-domain person re-ID benchmark in the Market-1501 folder layout.

Market-1501 and DukeMTMC-reID cannot be shipped, so the project renders a small stand-in that trains on a
CPU in minutes. Each identity has latent attributes (clothes, hair, body, bag), each camera a viewpoint and
a background, and each domain its own imaging style and attribute priors, so that a model trained on one
domain transfers imperfectly to the other. Every image is drawn from a numpy Generator seeded from
(seed, domain, pid, camera, index), so the same arguments always write byte-identical JPEGs.

Usage: ``python -m reidmodel.data.synthetic --out DIR [--ids N] [--seed S] [--height H] [--width W]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

SYNTHETIC_DOMAINS = ("synthetic_market", "synthetic_duke")
# Bump when the rendering changes in a way DomainStyle does not capture, so cached benchmarks are rebuilt.
FORMAT_VERSION = 1
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
# Market-1501 file names: pid (-1 junk, 0000 distractor), camera, sequence, frame, box index.
NAME_PATTERN = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
COMPLETE_MARKER = "COMPLETE"
JPEG_QUALITY = 92

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 32),
    "charcoal": (62, 62, 68),
    "gray": (128, 128, 132),
    "white": (232, 232, 226),
    "navy": (32, 42, 92),
    "blue": (52, 98, 196),
    "lightblue": (140, 182, 226),
    "red": (192, 38, 42),
    "pink": (228, 142, 172),
    "yellow": (230, 200, 56),
    "orange": (228, 122, 42),
    "green": (52, 128, 62),
    "olive": (108, 108, 52),
    "brown": (108, 70, 42),
    "beige": (206, 186, 150),
    "purple": (108, 60, 140),
}
SKIN_TONES = ((236, 196, 164), (214, 168, 128), (176, 124, 88), (122, 82, 56), (88, 58, 40))
HAIR_COLOURS = ((24, 20, 18), (70, 46, 30), (126, 88, 50), (196, 160, 96), (150, 150, 150))
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class DomainStyle:
    """Everything that makes one domain look like itself; the knobs for recalibrating difficulty."""

    name: str
    num_cameras: int
    # Imaging: applied to the whole frame after rendering.
    brightness: float = 1.0
    colour_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain
    saturation: float = 1.0
    blur_radius: float = 0.0  # Gaussian blur, in output pixels
    resolution_scale: float = 1.0  # < 1 renders at lower resolution and upsamples (soft, blocky detail)
    noise_std: float = 2.0  # sensor noise, in 0-255 units
    camera_brightness_jitter: float = 0.12  # spread of per-camera exposure
    camera_cast_jitter: float = 0.05  # spread of per-camera white balance
    illumination_jitter: float = 0.06  # spread of per-image exposure
    # Scene.
    wall_colour: tuple[int, int, int] = (180, 180, 175)
    ground_colour: tuple[int, int, int] = (150, 150, 145)
    background_jitter: float = 25.0  # per-camera shift of the scene colours
    tile_size: float = 0.12  # ground tile size, as a fraction of the image height
    texture_contrast: float = 0.12
    clutter: int = 3  # background objects (poles, bins, cars) per camera
    obstacle_colours: tuple[tuple[int, int, int], ...] = ((90, 90, 90),)
    # Attribute priors: weights over PALETTE names and over the discrete choices.
    upper_colours: dict[str, float] = field(default_factory=dict)
    lower_colours: dict[str, float] = field(default_factory=dict)
    patterns: dict[str, float] = field(default_factory=lambda: {"plain": 1.0})  # plain stripes checks logo
    lower_kinds: dict[str, float] = field(default_factory=lambda: {"trousers": 1.0})  # trousers shorts skirt
    hair_styles: dict[str, float] = field(default_factory=lambda: {"short": 1.0})  # short long hat
    bags: dict[str, float] = field(default_factory=lambda: {"none": 1.0})  # none backpack handbag shoulder
    coat_prob: float = 0.0
    long_sleeve_prob: float = 0.5
    # Difficulty.
    lookalike_prob: float = 0.5  # share of identities copied from a template with a few attributes changed
    lookalike_changes: int = 2  # attribute groups re-drawn for a look-alike
    shade_jitter: float = 14.0  # per-identity deviation from the palette colour (a fine cue)
    view_consistency: float = 0.7  # chance an image shows the camera's main viewpoint
    person_scale: float = 1.0  # mean framing: < 1 is a looser detection box (smaller person, more scene)
    scale_jitter: float = 0.06
    offset_jitter: float = 0.05
    occlusion_prob: float = 0.25
    occlusion_max: float = 0.4  # largest occluded fraction of the image side

    def __post_init__(self) -> None:
        if not 1 <= self.num_cameras <= 9:
            raise ValueError(f"DomainStyle {self.name}: num_cameras={self.num_cameras} must be 1-9 (c1-c9)")
        unknown = set(self.upper_colours) | set(self.lower_colours)
        unknown -= set(PALETTE)
        if unknown:
            raise ValueError(f"DomainStyle {self.name}: unknown colours {sorted(unknown)}; use PALETTE names")


MARKET_STYLE = DomainStyle(
    name="synthetic_market",
    num_cameras=6,
    brightness=1.08,
    colour_cast=(1.04, 1.0, 0.92),
    saturation=1.1,
    blur_radius=0.3,
    resolution_scale=1.0,
    noise_std=2.5,
    wall_colour=(196, 188, 170),
    ground_colour=(176, 170, 156),
    background_jitter=16.0,
    tile_size=0.1,
    texture_contrast=0.1,
    clutter=3,
    obstacle_colours=((60, 120, 60), (150, 150, 150), (200, 200, 205)),
    upper_colours={
        "white": 3, "red": 2, "blue": 2, "lightblue": 2, "yellow": 1.5, "pink": 1.5, "green": 1.5,
        "orange": 1, "black": 1.5, "gray": 1, "purple": 1, "beige": 1,
    },
    lower_colours={"blue": 3, "black": 3, "gray": 2, "beige": 2, "white": 1, "navy": 1.5, "brown": 1},
    patterns={"plain": 0.5, "stripes": 0.2, "checks": 0.1, "logo": 0.2},
    lower_kinds={"trousers": 0.55, "shorts": 0.3, "skirt": 0.15},
    hair_styles={"short": 0.6, "long": 0.35, "hat": 0.05},
    bags={"none": 0.45, "backpack": 0.3, "handbag": 0.12, "shoulder": 0.13},
    coat_prob=0.03,
    long_sleeve_prob=0.25,
)

DUKE_STYLE = DomainStyle(
    name="synthetic_duke",
    num_cameras=8,
    brightness=0.85,
    colour_cast=(0.8, 0.95, 1.3),
    saturation=0.6,
    blur_radius=0.2,
    resolution_scale=1.0,
    noise_std=2.0,
    camera_brightness_jitter=0.12,
    wall_colour=(160, 154, 150),
    ground_colour=(214, 216, 222),
    background_jitter=16.0,
    tile_size=0.22,
    texture_contrast=0.12,
    clutter=3,
    obstacle_colours=((50, 44, 40), (120, 40, 36), (80, 84, 96)),
    upper_colours={
        "black": 2, "charcoal": 1.5, "navy": 1.5, "gray": 1.5, "brown": 1.5, "olive": 1.5, "red": 1.5,
        "white": 1.5, "beige": 1.5, "blue": 1.5, "purple": 1, "green": 1.5, "orange": 0.5, "yellow": 0.5,
    },
    lower_colours={
        "black": 2, "navy": 1.5, "charcoal": 1.5, "blue": 2, "gray": 1.5, "brown": 1.5, "beige": 1.5, "white": 0.5,
    },
    patterns={"plain": 0.65, "stripes": 0.1, "checks": 0.15, "logo": 0.1},
    lower_kinds={"trousers": 0.7, "shorts": 0.1, "skirt": 0.2},
    hair_styles={"short": 0.5, "long": 0.35, "hat": 0.15},
    bags={"none": 0.35, "backpack": 0.4, "handbag": 0.1, "shoulder": 0.15},
    coat_prob=0.15,
    long_sleeve_prob=0.7,
    lookalike_prob=0.25,
    occlusion_prob=0.15,
)

DEFAULT_STYLES = (MARKET_STYLE, DUKE_STYLE)


@dataclass(frozen=True)
class Identity:
    """The latent appearance of one person; rendering adds view, pose, camera and domain on top."""

    height: float  # fraction of the image height
    build: float  # shoulder half-width, fraction of the body height
    leg_length: float  # fraction of the body height
    skin: tuple[int, int, int]
    hair_style: str
    hair_colour: tuple[int, int, int]
    hat_colour: tuple[int, int, int]
    upper_colour: tuple[int, int, int]
    upper_pattern: str
    upper_second: tuple[int, int, int]
    pattern_period: float  # fraction of the body height
    long_sleeves: bool
    coat: bool
    lower_kind: str
    lower_colour: tuple[int, int, int]
    shoe_colour: tuple[int, int, int]
    bag: str
    bag_colour: tuple[int, int, int]
    bag_side: int  # +1 right, -1 left of the image in the front view


# Attribute groups a look-alike re-draws together (a new bag comes with its own colour).
_LOOKALIKE_GROUPS = (
    ("upper_colour",),
    ("lower_colour",),
    ("upper_pattern", "upper_second", "pattern_period"),
    ("bag", "bag_colour", "bag_side"),
    ("hair_style", "hair_colour", "hat_colour"),
    ("shoe_colour",),
    ("height", "build", "leg_length"),
    ("lower_kind",),
    ("coat", "long_sleeves"),
    ("skin",),
)


@dataclass(frozen=True)
class Camera:
    index: int
    view: str
    brightness: float
    cast: np.ndarray  # per-channel gain on top of the domain's colour cast
    person_scale: float
    background: Image.Image  # a wide scene, cropped at a random offset per image
    obstacle_colour: tuple[int, int, int]


def _rng(*key: int) -> np.random.Generator:
    """A generator for one named draw, independent of the order in which draws happen."""
    return np.random.default_rng([int(k) for k in key])


# Top-level keys of the seed, so no two kinds of draw ever share a stream.
_KEY_SPLIT, _KEY_CAMERA, _KEY_TEMPLATE, _KEY_IDENTITY, _KEY_PLAN, _KEY_IMAGE, _KEY_STRANGER = range(7)


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def _shade(rng: np.random.Generator, colour: tuple[int, int, int], jitter: float) -> tuple[int, int, int]:
    shifted = np.asarray(colour, dtype=float) + rng.normal(0.0, jitter, 3)
    return tuple(int(v) for v in np.clip(shifted, 0, 255))


def _sample_identity(style: DomainStyle, rng: np.random.Generator) -> Identity:
    def palette(weights: dict[str, float]) -> tuple[int, int, int]:
        return _shade(rng, PALETTE[_choose(rng, weights)], style.shade_jitter)

    upper = palette(style.upper_colours)
    second = palette({name: 1.0 for name in PALETTE})
    return Identity(
        height=float(rng.uniform(0.8, 0.93)),
        build=float(rng.uniform(0.095, 0.135)),
        leg_length=float(rng.uniform(0.44, 0.52)),
        skin=_shade(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 6.0),
        hair_style=_choose(rng, style.hair_styles),
        hair_colour=_shade(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 6.0),
        hat_colour=palette(style.upper_colours),
        upper_colour=upper,
        upper_pattern=_choose(rng, style.patterns),
        upper_second=second,
        pattern_period=float(rng.uniform(0.035, 0.07)),
        long_sleeves=bool(rng.random() < style.long_sleeve_prob),
        coat=bool(rng.random() < style.coat_prob),
        lower_kind=_choose(rng, style.lower_kinds),
        lower_colour=palette(style.lower_colours),
        shoe_colour=_shade(rng, PALETTE[_choose(rng, {"black": 3, "white": 2, "brown": 1, "gray": 1})], 10),
        bag=_choose(rng, style.bags),
        bag_colour=palette({name: 1.0 for name in PALETTE}),
        bag_side=int(rng.choice((-1, 1))),
    )


def make_identity(style: DomainStyle, seed: int, domain_index: int, pid: int) -> Identity:
    """Identities come in pairs sharing a template; a look-alike keeps all but a few attribute groups."""
    rng = _rng(seed, domain_index, _KEY_IDENTITY, pid)
    own = _sample_identity(style, rng)
    if rng.random() >= style.lookalike_prob:
        return own
    template = _sample_identity(style, _rng(seed, domain_index, _KEY_TEMPLATE, pid // 2))
    groups = rng.choice(len(_LOOKALIKE_GROUPS), size=min(style.lookalike_changes, len(_LOOKALIKE_GROUPS)),
                        replace=False)
    changed = {name: getattr(own, name) for g in groups for name in _LOOKALIKE_GROUPS[g]}
    return dataclasses.replace(template, **changed)


def _scene(style: DomainStyle, rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A camera's backdrop: wall and tiled ground split at a horizon, plus a few fixed objects."""
    wide = width * 3
    wall = np.asarray(style.wall_colour, float) + rng.normal(0, style.background_jitter, 3)
    ground = np.asarray(style.ground_colour, float) + rng.normal(0, style.background_jitter, 3)
    horizon = int(height * rng.uniform(0.35, 0.6))
    rows = np.arange(height)[:, None, None]
    image = np.where(rows < horizon, wall, ground) * np.ones((height, wide, 3))
    # Low-frequency shading: a coarse random field upsampled smoothly.
    coarse = rng.normal(0, 1, (4, 12)).astype(np.float32)
    shading = np.asarray(Image.fromarray(coarse, mode="F").resize((wide, height), Image.BILINEAR))
    image *= 1.0 + style.texture_contrast * shading[..., None]
    # Ground tiles: darker joints in perspective-free grid.
    tile = max(2, int(style.tile_size * height))
    ys, xs = np.mgrid[0:height, 0:wide]
    joints = ((ys - horizon) % tile < max(1, tile // 8)) | (xs % (2 * tile) < max(1, tile // 8))
    image[(ys >= horizon) & joints] *= 1.0 - 2 * style.texture_contrast
    scene = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(scene)
    for _ in range(style.clutter):
        colour = style.obstacle_colours[rng.integers(len(style.obstacle_colours))]
        colour = _shade(rng, colour, 15)
        x = rng.uniform(0, wide)
        w = rng.uniform(0.05, 0.5) * width
        top = rng.uniform(0.1, 0.8) * height
        bottom = min(height, top + rng.uniform(0.15, 0.6) * height)
        draw.rectangle((x, top, x + w, bottom), fill=colour)
    return scene


def make_camera(style: DomainStyle, seed: int, domain_index: int, index: int, height: int, width: int) -> Camera:
    rng = _rng(seed, domain_index, _KEY_CAMERA, index)
    return Camera(
        index=index,
        view=VIEWS[(index - 1) % len(VIEWS)],
        brightness=float(1.0 + rng.normal(0, style.camera_brightness_jitter)),
        cast=1.0 + rng.normal(0, style.camera_cast_jitter, 3),
        person_scale=style.person_scale * float(rng.uniform(0.94, 1.04)),
        background=_scene(style, rng, 2 * height, 2 * width),
        obstacle_colour=_shade(rng, style.obstacle_colours[rng.integers(len(style.obstacle_colours))], 15),
    )


def _limb(draw: ImageDraw.ImageDraw, p0: tuple[float, float], p1: tuple[float, float], width: float,
          colour: tuple[int, int, int], t0: float = 0.0, t1: float = 1.0) -> None:
    """The part [t0, t1] of a limb running from p0 to p1, drawn as a quad of the given width."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length * width / 2, (x1 - x0) / length * width / 2
    a = (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0)
    b = (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1)
    draw.polygon([(a[0] + nx, a[1] + ny), (b[0] + nx, b[1] + ny), (b[0] - nx, b[1] - ny), (a[0] - nx, a[1] - ny)],
                 fill=colour)


def _garment(layer: Image.Image, polygon: list[tuple[float, float]], person: Identity, unit: float) -> None:
    """Paste the upper garment's pattern through the garment's silhouette."""
    mask = Image.new("L", layer.size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    ys, xs = np.mgrid[0:layer.size[1], 0:layer.size[0]]
    period = max(2, int(person.pattern_period * unit))
    if person.upper_pattern == "stripes":
        second = (ys // period) % 2 == 1
    elif person.upper_pattern == "checks":
        second = ((ys // period) + (xs // period)) % 2 == 1
    else:
        second = np.zeros(ys.shape, dtype=bool)
    fill = np.where(second[..., None], person.upper_second, person.upper_colour).astype(np.uint8)
    layer.paste(Image.fromarray(fill).convert("RGBA"), mask=mask)


def draw_person(person: Identity, view: str, size: tuple[int, int], rng: np.random.Generator,
                scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> Image.Image:
    """An RGBA layer with the person in the given view; the side view faces right."""
    width, height = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    u = height * person.height * scale
    top = (height - u) / 2 + dy * height
    cx = width / 2 + dx * width
    side = view == "side"
    half = u * person.build * (0.62 if side else 1.0)
    shoulder_y = top + 0.155 * u
    hip_y = top + (1.0 - person.leg_length) * u
    foot_y = top + 0.965 * u
    knee_y = (hip_y + foot_y) / 2
    hand_y = top + 0.5 * u
    arm_w, leg_w = 0.045 * u, 0.06 * u
    stride = rng.uniform(0.0, 0.12) * u if side else rng.uniform(0.0, 0.02) * u
    swing = rng.uniform(-0.35, 0.35)
    bag_side = person.bag_side if view == "front" else -person.bag_side
    sleeve = person.upper_colour if person.long_sleeves or person.coat else person.skin

    # Long hair hangs behind the head and shoulders.
    head_w = 0.105 * u if side else 0.095 * u
    head_box = (cx - head_w / 2, top, cx + head_w / 2, top + 0.135 * u)
    if person.hair_style == "long":
        back_x = cx - head_w * 0.7 if side else cx - head_w * 0.62
        draw.rectangle((back_x, top + 0.05 * u, cx + (0.2 * head_w if side else head_w * 0.62),
                        shoulder_y + 0.09 * u), fill=person.hair_colour)

    # Backpack seen from the side sticks out behind the back.
    if person.bag == "backpack" and side:
        draw.rounded_rectangle((cx - half - 0.085 * u, shoulder_y + 0.02 * u, cx - half + 0.02 * u,
                                shoulder_y + 0.27 * u), radius=0.02 * u, fill=person.bag_colour)

    # Legs, then the lower garment over them.
    hip_half = half * 0.8
    if side:
        legs = [((cx, hip_y), (cx - stride, foot_y)), ((cx, hip_y), (cx + stride, foot_y))]
    else:
        legs = [((cx - hip_half + leg_w / 2, hip_y), (cx - hip_half + leg_w / 2 - stride, foot_y)),
                ((cx + hip_half - leg_w / 2, hip_y), (cx + hip_half - leg_w / 2 + stride, foot_y))]
    lower_end = {"trousers": 1.0, "shorts": 0.45, "skirt": 0.0}[person.lower_kind]
    for p0, p1 in legs:
        _limb(draw, p0, p1, leg_w, person.skin)
        if lower_end > 0:
            _limb(draw, p0, p1, leg_w * 1.08, person.lower_colour, 0.0, lower_end)
        foot_dx = 0.035 * u if side else 0.0
        draw.ellipse((p1[0] - leg_w * 0.65, foot_y - 0.02 * u, p1[0] + leg_w * 0.65 + foot_dx,
                      top + u), fill=person.shoe_colour)
    if person.lower_kind == "skirt":
        draw.polygon([(cx - hip_half, hip_y - 0.01 * u), (cx + hip_half, hip_y - 0.01 * u),
                      (cx + hip_half * 1.35, knee_y), (cx - hip_half * 1.35, knee_y)], fill=person.lower_colour)
    else:
        draw.rectangle((cx - hip_half, hip_y - 0.01 * u, cx + hip_half, hip_y + 0.05 * u),
                       fill=person.lower_colour)

    # Torso (or long coat) with the garment's pattern.
    bottom = knee_y + 0.06 * u if person.coat else hip_y + 0.01 * u
    flare = 1.08 if person.coat else 0.86
    torso = [(cx - half, shoulder_y), (cx + half, shoulder_y), (cx + half * flare, bottom),
             (cx - half * flare, bottom)]
    _garment(layer, torso, person, u)
    draw = ImageDraw.Draw(layer)
    if person.upper_pattern == "logo" and view == "front":
        r = 0.035 * u
        draw.rectangle((cx - r, shoulder_y + 0.07 * u, cx + r, shoulder_y + 0.07 * u + 2 * r),
                       fill=person.upper_second)
    if person.bag == "backpack" and view == "back":
        draw.rounded_rectangle((cx - half * 0.75, shoulder_y + 0.03 * u, cx + half * 0.75, shoulder_y + 0.28 * u),
                               radius=0.02 * u, fill=person.bag_colour)
    if person.bag == "backpack" and view == "front":
        for sx in (-1, 1):
            _limb(draw, (cx + sx * half * 0.75, shoulder_y), (cx + sx * half * 0.6, shoulder_y + 0.2 * u),
                  0.022 * u, person.bag_colour)
    if person.bag == "shoulder" and not side:
        _limb(draw, (cx - bag_side * half * 0.8, shoulder_y), (cx + bag_side * half, hip_y - 0.03 * u),
              0.018 * u, person.bag_colour)
    if person.bag == "shoulder" and side:
        _limb(draw, (cx, shoulder_y), (cx - 0.01 * u, hip_y - 0.03 * u), 0.018 * u, person.bag_colour)

    # Arms: both at the torso's sides from front and back, one swinging arm from the side.
    if side:
        shoulder = (cx, shoulder_y + 0.02 * u)
        hand = (cx + math.sin(swing) * 0.34 * u, shoulder_y + 0.02 * u + math.cos(swing) * 0.34 * u)
        hands = [hand]
        arms = [(shoulder, hand)]
    else:
        arms, hands = [], []
        for sx in (-1, 1):
            shoulder = (cx + sx * (half + arm_w * 0.4), shoulder_y + 0.02 * u)
            hand = (cx + sx * (half + arm_w * 0.6) + swing * 0.03 * u * sx, hand_y)
            arms.append((shoulder, hand))
            hands.append(hand)
    for shoulder, hand in arms:
        _limb(draw, shoulder, hand, arm_w, person.skin)
        _limb(draw, shoulder, hand, arm_w * 1.05, person.upper_colour, 0.0, 0.92 if sleeve != person.skin else 0.4)

    # Handbag in the hand; shoulder bag at the hip.
    if person.bag == "handbag":
        hx, hy = hands[0] if side else hands[0 if bag_side < 0 else 1]
        draw.rectangle((hx - 0.045 * u, hy + 0.01 * u, hx + 0.045 * u, hy + 0.1 * u), fill=person.bag_colour)
    if person.bag == "shoulder":
        bx = cx - 0.01 * u if side else cx + bag_side * half
        draw.rectangle((bx - 0.05 * u, hip_y - 0.06 * u, bx + 0.05 * u, hip_y + 0.04 * u), fill=person.bag_colour)

    # Head: face in front, hair behind, half-and-half from the side.
    draw.rectangle((cx - 0.018 * u, top + 0.11 * u, cx + 0.018 * u, shoulder_y + 0.01 * u), fill=person.skin)
    draw.ellipse(head_box, fill=person.hair_colour if view == "back" else person.skin)
    x0, y0, x1, y1 = head_box
    if person.hair_style == "hat":
        draw.rectangle((x0 - 0.01 * u, y0 + 0.035 * u, x1 + 0.01 * u, y0 + 0.05 * u), fill=person.hat_colour)
        draw.chord((x0, y0 - 0.01 * u, x1, y0 + 0.09 * u), 180, 360, fill=person.hat_colour)
    elif view == "side":
        draw.pieslice(head_box, 110, 290, fill=person.hair_colour)
    elif view == "front":
        draw.chord((x0, y0, x1, y0 + 0.09 * u), 180, 360, fill=person.hair_colour)
    return layer


def _finish(image: Image.Image, style: DomainStyle, camera: Camera, rng: np.random.Generator,
            height: int, width: int) -> Image.Image:
    """Downsample, then apply the domain's optics and sensor: resolution, blur, exposure, cast, noise."""
    image = image.resize((width, height), Image.LANCZOS)
    if style.resolution_scale < 1.0:
        small = (max(4, round(width * style.resolution_scale)), max(4, round(height * style.resolution_scale)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    if style.blur_radius > 0:
        image = image.filter(ImageFilter.GaussianBlur(style.blur_radius))
    pixels = np.asarray(image, dtype=np.float32)
    exposure = style.brightness * camera.brightness * (1.0 + rng.normal(0, style.illumination_jitter))
    pixels = pixels * exposure * np.asarray(style.colour_cast, np.float32) * camera.cast.astype(np.float32)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + style.saturation * (pixels - grey)
    pixels += rng.normal(0, style.noise_std, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def render_image(style: DomainStyle, camera: Camera, person: Identity, rng: np.random.Generator,
                 height: int, width: int, junk: bool = False) -> Image.Image:
    """One detection crop; junk crops keep the person mostly out of frame, like a failed detection."""
    canvas_w, canvas_h = 2 * width, 2 * height
    crop_x = int(rng.integers(0, camera.background.width - canvas_w + 1))
    frame = camera.background.crop((crop_x, 0, crop_x + canvas_w, canvas_h)).convert("RGBA")
    view = camera.view if rng.random() < style.view_consistency else VIEWS[rng.integers(len(VIEWS))]
    scale = camera.person_scale * (1.0 + rng.uniform(-style.scale_jitter, style.scale_jitter))
    dx = rng.uniform(-style.offset_jitter, style.offset_jitter)
    dy = rng.uniform(-style.offset_jitter, style.offset_jitter) / 2
    if junk:
        dx = float(rng.choice((-1, 1))) * rng.uniform(0.45, 0.65)
    layer = draw_person(person, view, (canvas_w, canvas_h), rng, scale, dx, dy)
    if view == "side" and rng.random() < 0.5:
        layer = ImageOps.mirror(layer)
    frame.alpha_composite(layer)
    frame = frame.convert("RGB")
    if not junk and rng.random() < style.occlusion_prob:
        frame = _occlude(frame, style, camera, rng)
    return _finish(frame, style, camera, rng, height, width)


def _occlude(frame: Image.Image, style: DomainStyle, camera: Camera, rng: np.random.Generator) -> Image.Image:
    """An obstacle box entering from the bottom, a side, or standing in front as a pole."""
    w, h = frame.size
    extent = rng.uniform(0.12, style.occlusion_max)
    where = int(rng.integers(4))
    if where == 0:
        box = (0, h * (1 - extent), w, h)
    elif where == 1:
        box = (0, rng.uniform(0, 0.4) * h, w * extent, h)
    elif where == 2:
        box = (w * (1 - extent), rng.uniform(0, 0.4) * h, w, h)
    else:
        x = rng.uniform(0.2, 0.8) * w
        box = (x - w * extent / 3, 0, x + w * extent / 3, h)
    ImageDraw.Draw(frame).rectangle(box, fill=_shade(rng, camera.obstacle_colour, 10))
    return frame


def _sightings(rng: np.random.Generator, num_cameras: int) -> list[tuple[int, int, int]]:
    """(camera, frame, box index) of every image of one identity: 2-4 cameras, 8-10 images, >= 2 per camera."""
    cams = sorted(int(c) for c in rng.choice(np.arange(1, num_cameras + 1), size=min(num_cameras,
                  int(rng.integers(2, 5))), replace=False))
    total = int(rng.integers(8, 11))
    counts = np.full(len(cams), 2)
    counts += np.bincount(rng.integers(len(cams), size=max(0, total - counts.sum())), minlength=len(cams))
    sightings = []
    for cam, count in zip(cams, counts, strict=True):
        frame = int(rng.integers(0, 900_000))
        for k in range(1, int(count) + 1):
            frame += int(rng.integers(5, 60))
            sightings.append((cam, frame, k))
    return sightings


def _file_name(pid: int, cam: int, frame: int, k: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam}s1_{frame:06d}_{k:02d}.jpg"


def _save(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=0)


def generate_domain(out: Path, style: DomainStyle, domain_index: int, num_ids: int, seed: int,
                    height: int, width: int) -> Path:
    """Write one domain as <out>/<style.name>/{bounding_box_train,query,bounding_box_test}."""
    root = Path(out) / style.name
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty: delete it or choose another output folder")
    folders = {split: root / split for split in SPLITS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    cameras = [make_camera(style, seed, domain_index, c, height, width) for c in range(1, style.num_cameras + 1)]

    pids = _rng(seed, domain_index, _KEY_SPLIT).permutation(2 * num_ids) + 1
    test_ids = set(int(p) for p in pids[num_ids:])
    for pid in sorted(int(p) for p in pids):
        person = make_identity(style, seed, domain_index, pid)
        plan_rng = _rng(seed, domain_index, _KEY_PLAN, pid)
        sightings = _sightings(plan_rng, style.num_cameras)
        query = set()
        if pid in test_ids:
            # One image from each of two cameras; the other images of those cameras stay in the gallery.
            seen = sorted({cam for cam, _, _ in sightings})
            for cam in plan_rng.choice(seen, size=2, replace=False):
                in_cam = [s for s in sightings if s[0] == cam]
                query.add(in_cam[int(plan_rng.integers(len(in_cam)))])
        for cam, frame, k in sightings:
            split = "bounding_box_train" if pid not in test_ids else "query" if (cam, frame, k) in query \
                else "bounding_box_test"
            image = render_image(style, cameras[cam - 1], person, _rng(seed, domain_index, _KEY_IMAGE, pid + 1,
                                 cam, k), height, width)
            _save(image, folders[split] / _file_name(pid, cam, frame, k))

    # Distractors (pid 0000, strangers never seen twice) and junk (pid -1, failed detections) in the gallery.
    extras = max(2, num_ids // 4)
    for pid, junk in ((0, False), (-1, True)):
        for i in range(extras):
            cam = i % style.num_cameras + 1
            k = i // style.num_cameras + 1
            stranger = _sample_identity(style, _rng(seed, domain_index, _KEY_STRANGER, pid + 1, cam, k))
            rng = _rng(seed, domain_index, _KEY_IMAGE, pid + 1, cam, k)
            frame = int(rng.integers(0, 999_999))
            image = render_image(style, cameras[cam - 1], stranger, rng, height, width, junk=junk)
            _save(image, folders["bounding_box_test"] / _file_name(pid, cam, frame, k))
    return root


def _check_arguments(num_ids: int, seed: int, height: int, width: int) -> None:
    if not 2 <= num_ids <= 4999:
        raise ValueError(f"num_ids={num_ids} must be between 2 and 4999 (pids are 4 digits and twice num_ids)")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    if height < 16 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small: use height >= 16 and width >= 8")


def generate_benchmark(out: Path, num_ids: int = 120, seed: int = 0, height: int = 128, width: int = 64,
                       styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> Path:
    """Write every domain of the benchmark under out; returns out."""
    _check_arguments(num_ids, seed, height, width)
    out = Path(out)
    for domain_index, style in enumerate(styles):
        generate_domain(out, style, domain_index, num_ids, seed, height, width)
    return out


def benchmark_folder_name(num_ids: int, seed: int, height: int, width: int,
                          styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> str:
    """The cache folder name: a change of any argument, style knob or format version gives a new folder."""
    digest = hashlib.sha1(repr((FORMAT_VERSION, tuple(styles))).encode()).hexdigest()[:8]
    return f"v{FORMAT_VERSION}_ids{num_ids}_seed{seed}_{height}x{width}_{digest}"


def ensure_synthetic(cache_dir: str | Path, num_ids: int = 120, seed: int = 0, height: int = 128,
                     width: int = 64, styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> Path:
    """Generate once into a temporary folder and rename it into place, so readers never see half a benchmark."""
    _check_arguments(num_ids, seed, height, width)
    cache_dir = Path(cache_dir).expanduser()
    final = cache_dir / benchmark_folder_name(num_ids, seed, height, width, styles)
    if (final / COMPLETE_MARKER).is_file():
        return final
    if final.exists():
        raise FileExistsError(f"{final} exists without a {COMPLETE_MARKER} marker: delete it and retry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=cache_dir))
    try:
        generate_benchmark(staging, num_ids, seed, height, width, styles)
        (staging / COMPLETE_MARKER).write_text(f"{final.name}\n")
        try:
            os.replace(staging, final)
        except OSError:
            # Another process renamed its copy into place first; its result is identical.
            if not (final / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def describe_domain(root: Path) -> str:
    """One line of image and identity counts per split, parsed from the file names."""
    parts = []
    for split in SPLITS:
        names = [NAME_PATTERN.match(p.name) for p in sorted((Path(root) / split).glob("*.jpg"))]
        pids = [int(m.group(1)) for m in names if m]
        people = {p for p in pids if p > 0}
        extra = ""
        if split == "bounding_box_test":
            extra = f" (+{pids.count(0)} distractors, +{pids.count(-1)} junk)"
        parts.append(f"{split} {len(pids)} images / {len(people)} ids{extra}")
    cams = {int(m.group(2)) for split in SPLITS for p in (Path(root) / split).glob("*.jpg")
            if (m := NAME_PATTERN.match(p.name))}
    return f"{Path(root).name}: " + ", ".join(parts) + f", cameras {min(cams)}-{max(cams)}"


def write_preview(root: Path, out_png: Path, ids_per_domain: int = 6, images_per_id: int = 6,
                  zoom: int = 1) -> Path:
    """A contact sheet, one row per identity across cameras (train split), then distractors and junk."""
    rows: list[tuple[str, list[Path]]] = []
    for domain in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        short = domain.name.removeprefix("synthetic_")
        by_pid: dict[str, list[Path]] = {}
        for path in sorted((domain / "bounding_box_train").glob("*.jpg")):
            by_pid.setdefault(path.name.split("_")[0], []).append(path)
        for pid in sorted(by_pid)[:ids_per_domain]:
            # Spread the chosen images over cameras: take every camera's first image before any second one.
            ordered = sorted(by_pid[pid], key=lambda p: (int(p.name.split("_")[3][:2]), p.name))
            rows.append((f"{short} {pid}", ordered[:images_per_id]))
        gallery = sorted((domain / "bounding_box_test").glob("*.jpg"))
        rows.append((f"{short} 0/-1", [p for p in gallery if p.name.startswith("0000_")][:3]
                     + [p for p in gallery if p.name.startswith("-1_")][:3]))
    first = Image.open(rows[0][1][0])
    cell_w, cell_h = first.width * zoom, first.height * zoom
    label_w = 90
    sheet = Image.new("RGB", (label_w + images_per_id * (cell_w + 2), len(rows) * (cell_h + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, paths) in enumerate(rows):
        y = r * (cell_h + 2)
        draw.text((4, y + cell_h // 2 - 6), label, fill=(0, 0, 0))
        for c, path in enumerate(paths):
            with Image.open(path) as image:
                sheet.paste(image.resize((cell_w, cell_h), Image.NEAREST), (label_w + c * (cell_w + 2), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m reidmodel.data.synthetic",
                            description="Write the synthetic two-domain re-ID benchmark in Market-1501 layout.")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives one folder per domain")
    parser.add_argument("--ids", type=int, default=120, help="identities per split and domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--preview", type=Path, help="also write a contact sheet PNG here")
    args = parser.parse_args(argv)
    try:
        out = generate_benchmark(args.out, args.ids, args.seed, args.height, args.width)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    for style in DEFAULT_STYLES:
        print(describe_domain(out / style.name))
    if args.preview:
        print(f"preview: {write_preview(out, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
