"""One detection crop: a camera's scene, the person composited in, then the domain's optics and sensor."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from reidmodel.data.synthetic.identity import Identity, shade
from reidmodel.data.synthetic.person import VIEWS, draw_person
from reidmodel.data.synthetic.seeds import KEY_CAMERA, rng_for
from reidmodel.data.synthetic.styles import DomainStyle


@dataclass(frozen=True)
class Camera:
    """What every image of one camera shares: its usual viewpoint, exposure, white balance and scene."""

    index: int
    view: str
    brightness: float
    cast: np.ndarray  # per-channel gain on top of the domain's colour cast
    person_scale: float
    background: Image.Image  # a wide scene, cropped at a random offset per image
    obstacle_colour: tuple[int, int, int]


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
        colour = shade(rng, colour, 15)
        x = rng.uniform(0, wide)
        w = rng.uniform(0.05, 0.5) * width
        top = rng.uniform(0.1, 0.8) * height
        bottom = min(height, top + rng.uniform(0.15, 0.6) * height)
        draw.rectangle((x, top, x + w, bottom), fill=colour)
    return scene


def make_camera(style: DomainStyle, seed: int, domain_index: int, index: int, *,
                height: int, width: int) -> Camera:
    """Camera ``index`` of a domain from its own random stream (the same whatever else is drawn); its scene
    is twice the crop size, for the crops cut from it."""
    rng = rng_for(seed, domain_index, KEY_CAMERA, index)
    return Camera(
        index=index,
        view=VIEWS[(index - 1) % len(VIEWS)],
        brightness=float(1.0 + rng.normal(0, style.camera_brightness_jitter)),
        cast=1.0 + rng.normal(0, style.camera_cast_jitter, 3),
        person_scale=style.person_scale * float(rng.uniform(0.94, 1.04)),
        background=_scene(style, rng, 2 * height, 2 * width),
        obstacle_colour=shade(rng, style.obstacle_colours[rng.integers(len(style.obstacle_colours))], 15),
    )


def _finish(image: Image.Image, style: DomainStyle, camera: Camera, rng: np.random.Generator, *,
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


def render_image(style: DomainStyle, camera: Camera, person: Identity, rng: np.random.Generator, *,
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
    layer = draw_person(person, view, (canvas_w, canvas_h), rng, scale=scale, dx=dx, dy=dy)
    if view == "side" and rng.random() < 0.5:
        layer = ImageOps.mirror(layer)
    frame.alpha_composite(layer)
    frame = frame.convert("RGB")
    if not junk and rng.random() < style.occlusion_prob:
        frame = _occlude(frame, style, camera, rng)
    return _finish(frame, style, camera, rng, height=height, width=width)


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
    ImageDraw.Draw(frame).rectangle(box, fill=shade(rng, camera.obstacle_colour, 10))
    return frame
