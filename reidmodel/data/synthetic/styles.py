"""The two domains' looks (imaging, scene, clothing priors) and the colour tables they draw from."""

from __future__ import annotations

from dataclasses import dataclass, field

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
SYNTHETIC_DOMAINS = tuple(style.name for style in DEFAULT_STYLES)
