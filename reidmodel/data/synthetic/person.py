"""Drawing one person as flat shapes on a transparent layer, back to front, in one of three views."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from reidmodel.data.synthetic.identity import Identity

VIEWS = ("front", "back", "side")
Point = tuple[float, float]


@dataclass(frozen=True)
class Pose:
    """Where the body parts go on the canvas, in pixels; u is the body height and cx its centre line."""

    view: str
    u: float
    top: float
    cx: float
    half: float  # shoulder half-width
    shoulder_y: float
    hip_y: float
    foot_y: float
    hand_y: float
    arm_w: float
    leg_w: float
    stride: float  # horizontal spread of the feet
    swing: float  # arm angle from the side, in radians
    bag_side: int  # the person's bag_side as it appears in this view

    @property
    def side(self) -> bool:
        return self.view == "side"

    @property
    def knee_y(self) -> float:
        return (self.hip_y + self.foot_y) / 2

    @property
    def head_w(self) -> float:
        return 0.105 * self.u if self.side else 0.095 * self.u

    @property
    def head_box(self) -> tuple[float, float, float, float]:
        return (self.cx - self.head_w / 2, self.top, self.cx + self.head_w / 2, self.top + 0.135 * self.u)


def make_pose(person: Identity, view: str, size: tuple[int, int], rng: np.random.Generator, *,
              scale: float, dx: float, dy: float) -> Pose:
    """The person's proportions placed on the canvas; stride and arm swing are the only random draws."""
    width, height = size
    u = height * person.height * scale
    top = (height - u) / 2 + dy * height
    side = view == "side"
    return Pose(
        view=view,
        u=u,
        top=top,
        cx=width / 2 + dx * width,
        half=u * person.build * (0.62 if side else 1.0),
        shoulder_y=top + 0.155 * u,
        hip_y=top + (1.0 - person.leg_length) * u,
        foot_y=top + 0.965 * u,
        hand_y=top + 0.5 * u,
        arm_w=0.045 * u,
        leg_w=0.06 * u,
        stride=rng.uniform(0.0, 0.12) * u if side else rng.uniform(0.0, 0.02) * u,
        swing=rng.uniform(-0.35, 0.35),
        bag_side=person.bag_side if view == "front" else -person.bag_side,
    )


def _limb(draw: ImageDraw.ImageDraw, p0: Point, p1: Point, width: float, colour: tuple[int, int, int], *,
          t0: float = 0.0, t1: float = 1.0) -> None:
    """The part [t0, t1] of a limb running from p0 to p1, drawn as a quad of the given width."""
    (x0, y0), (x1, y1) = p0, p1
    length = math.hypot(x1 - x0, y1 - y0) or 1.0
    nx, ny = -(y1 - y0) / length * width / 2, (x1 - x0) / length * width / 2
    a = (x0 + (x1 - x0) * t0, y0 + (y1 - y0) * t0)
    b = (x0 + (x1 - x0) * t1, y0 + (y1 - y0) * t1)
    draw.polygon([(a[0] + nx, a[1] + ny), (b[0] + nx, b[1] + ny), (b[0] - nx, b[1] - ny), (a[0] - nx, a[1] - ny)],
                 fill=colour)


def _garment(layer: Image.Image, polygon: list[Point], person: Identity, unit: float) -> None:
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


def _draw_behind_body(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose) -> None:
    """Long hair hanging behind head and shoulders; a backpack seen from the side sticks out behind the back."""
    u, cx, head_w, side = pose.u, pose.cx, pose.head_w, pose.side
    if person.hair_style == "long":
        back_x = cx - head_w * 0.7 if side else cx - head_w * 0.62
        draw.rectangle((back_x, pose.top + 0.05 * u, cx + (0.2 * head_w if side else head_w * 0.62),
                        pose.shoulder_y + 0.09 * u), fill=person.hair_colour)
    if person.bag == "backpack" and side:
        draw.rounded_rectangle((cx - pose.half - 0.085 * u, pose.shoulder_y + 0.02 * u, cx - pose.half + 0.02 * u,
                                pose.shoulder_y + 0.27 * u), radius=0.02 * u, fill=person.bag_colour)


def _draw_legs(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose) -> None:
    """Legs and shoes, then the lower garment over them."""
    u, cx, hip_y, foot_y, leg_w, stride = pose.u, pose.cx, pose.hip_y, pose.foot_y, pose.leg_w, pose.stride
    hip_half = pose.half * 0.8
    if pose.side:
        legs = [((cx, hip_y), (cx - stride, foot_y)), ((cx, hip_y), (cx + stride, foot_y))]
    else:
        legs = [((cx - hip_half + leg_w / 2, hip_y), (cx - hip_half + leg_w / 2 - stride, foot_y)),
                ((cx + hip_half - leg_w / 2, hip_y), (cx + hip_half - leg_w / 2 + stride, foot_y))]
    lower_end = {"trousers": 1.0, "shorts": 0.45, "skirt": 0.0}[person.lower_kind]
    for p0, p1 in legs:
        _limb(draw, p0, p1, leg_w, person.skin)
        if lower_end > 0:
            _limb(draw, p0, p1, leg_w * 1.08, person.lower_colour, t1=lower_end)
        foot_dx = 0.035 * u if pose.side else 0.0
        draw.ellipse((p1[0] - leg_w * 0.65, foot_y - 0.02 * u, p1[0] + leg_w * 0.65 + foot_dx,
                      pose.top + u), fill=person.shoe_colour)
    if person.lower_kind == "skirt":
        draw.polygon([(cx - hip_half, hip_y - 0.01 * u), (cx + hip_half, hip_y - 0.01 * u),
                      (cx + hip_half * 1.35, pose.knee_y), (cx - hip_half * 1.35, pose.knee_y)],
                     fill=person.lower_colour)
    else:
        draw.rectangle((cx - hip_half, hip_y - 0.01 * u, cx + hip_half, hip_y + 0.05 * u),
                       fill=person.lower_colour)


def _draw_torso(layer: Image.Image, person: Identity, pose: Pose) -> None:
    """Torso (or long coat) with the garment's pattern, and a logo on the chest from the front."""
    u, cx, half, shoulder_y = pose.u, pose.cx, pose.half, pose.shoulder_y
    bottom = pose.knee_y + 0.06 * u if person.coat else pose.hip_y + 0.01 * u
    flare = 1.08 if person.coat else 0.86
    torso = [(cx - half, shoulder_y), (cx + half, shoulder_y), (cx + half * flare, bottom),
             (cx - half * flare, bottom)]
    _garment(layer, torso, person, u)
    if person.upper_pattern == "logo" and pose.view == "front":
        r = 0.035 * u
        ImageDraw.Draw(layer).rectangle((cx - r, shoulder_y + 0.07 * u, cx + r, shoulder_y + 0.07 * u + 2 * r),
                                        fill=person.upper_second)


def _draw_bag_on_body(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose) -> None:
    """A backpack from the back, its straps from the front, a shoulder bag's strap across the torso."""
    u, cx, half, shoulder_y, hip_y = pose.u, pose.cx, pose.half, pose.shoulder_y, pose.hip_y
    if person.bag == "backpack" and pose.view == "back":
        draw.rounded_rectangle((cx - half * 0.75, shoulder_y + 0.03 * u, cx + half * 0.75, shoulder_y + 0.28 * u),
                               radius=0.02 * u, fill=person.bag_colour)
    if person.bag == "backpack" and pose.view == "front":
        for sx in (-1, 1):
            _limb(draw, (cx + sx * half * 0.75, shoulder_y), (cx + sx * half * 0.6, shoulder_y + 0.2 * u),
                  0.022 * u, person.bag_colour)
    if person.bag == "shoulder" and not pose.side:
        _limb(draw, (cx - pose.bag_side * half * 0.8, shoulder_y), (cx + pose.bag_side * half, hip_y - 0.03 * u),
              0.018 * u, person.bag_colour)
    if person.bag == "shoulder" and pose.side:
        _limb(draw, (cx, shoulder_y), (cx - 0.01 * u, hip_y - 0.03 * u), 0.018 * u, person.bag_colour)


def _draw_arms(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose) -> list[Point]:
    """Both arms at the torso's sides from front and back, one swinging arm from the side; returns the hands."""
    u, cx, half, shoulder_y, arm_w, swing = pose.u, pose.cx, pose.half, pose.shoulder_y, pose.arm_w, pose.swing
    if pose.side:
        shoulder = (cx, shoulder_y + 0.02 * u)
        hand = (cx + math.sin(swing) * 0.34 * u, shoulder_y + 0.02 * u + math.cos(swing) * 0.34 * u)
        arms = [(shoulder, hand)]
    else:
        arms = [((cx + sx * (half + arm_w * 0.4), shoulder_y + 0.02 * u),
                 (cx + sx * (half + arm_w * 0.6) + swing * 0.03 * u * sx, pose.hand_y)) for sx in (-1, 1)]
    sleeve = person.upper_colour if person.long_sleeves or person.coat else person.skin
    for shoulder, hand in arms:
        _limb(draw, shoulder, hand, arm_w, person.skin)
        _limb(draw, shoulder, hand, arm_w * 1.05, person.upper_colour, t1=0.92 if sleeve != person.skin else 0.4)
    return [hand for _, hand in arms]


def _draw_carried_bag(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose, hands: list[Point]) -> None:
    """A handbag in the hand on the bag's side; a shoulder bag at the hip."""
    u, cx = pose.u, pose.cx
    if person.bag == "handbag":
        hx, hy = hands[0] if pose.side else hands[0 if pose.bag_side < 0 else 1]
        draw.rectangle((hx - 0.045 * u, hy + 0.01 * u, hx + 0.045 * u, hy + 0.1 * u), fill=person.bag_colour)
    if person.bag == "shoulder":
        bx = cx - 0.01 * u if pose.side else cx + pose.bag_side * pose.half
        draw.rectangle((bx - 0.05 * u, pose.hip_y - 0.06 * u, bx + 0.05 * u, pose.hip_y + 0.04 * u),
                       fill=person.bag_colour)


def _draw_head(draw: ImageDraw.ImageDraw, person: Identity, pose: Pose) -> None:
    """Neck and head: face in front, hair behind, half-and-half from the side; a hat over any view."""
    u, cx, view = pose.u, pose.cx, pose.view
    draw.rectangle((cx - 0.018 * u, pose.top + 0.11 * u, cx + 0.018 * u, pose.shoulder_y + 0.01 * u), fill=person.skin)
    draw.ellipse(pose.head_box, fill=person.hair_colour if view == "back" else person.skin)
    x0, y0, x1, y1 = pose.head_box
    if person.hair_style == "hat":
        draw.rectangle((x0 - 0.01 * u, y0 + 0.035 * u, x1 + 0.01 * u, y0 + 0.05 * u), fill=person.hat_colour)
        draw.chord((x0, y0 - 0.01 * u, x1, y0 + 0.09 * u), 180, 360, fill=person.hat_colour)
    elif view == "side":
        draw.pieslice(pose.head_box, 110, 290, fill=person.hair_colour)
    elif view == "front":
        draw.chord((x0, y0, x1, y0 + 0.09 * u), 180, 360, fill=person.hair_colour)


def draw_person(person: Identity, view: str, size: tuple[int, int], rng: np.random.Generator, *,
                scale: float = 1.0, dx: float = 0.0, dy: float = 0.0) -> Image.Image:
    """An RGBA layer with the person in the given view; the side view faces right."""
    pose = make_pose(person, view, size, rng, scale=scale, dx=dx, dy=dy)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    _draw_behind_body(draw, person, pose)
    _draw_legs(draw, person, pose)
    _draw_torso(layer, person, pose)
    _draw_bag_on_body(draw, person, pose)
    hands = _draw_arms(draw, person, pose)
    _draw_carried_bag(draw, person, pose, hands)
    _draw_head(draw, person, pose)
    return layer
