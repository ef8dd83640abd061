"""Who a person is: latent attributes drawn from a domain's priors, with look-alike pairs for difficulty."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from reidmodel.data.synthetic.seeds import KEY_IDENTITY, KEY_TEMPLATE, rng_for
from reidmodel.data.synthetic.styles import HAIR_COLOURS, PALETTE, SKIN_TONES, DomainStyle


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


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def shade(rng: np.random.Generator, colour: tuple[int, int, int], jitter: float) -> tuple[int, int, int]:
    shifted = np.asarray(colour, dtype=float) + rng.normal(0.0, jitter, 3)
    return tuple(int(v) for v in np.clip(shifted, 0, 255))


def sample_identity(style: DomainStyle, rng: np.random.Generator) -> Identity:
    def palette(weights: dict[str, float]) -> tuple[int, int, int]:
        return shade(rng, PALETTE[_choose(rng, weights)], style.shade_jitter)

    upper = palette(style.upper_colours)
    second = palette({name: 1.0 for name in PALETTE})
    return Identity(
        height=float(rng.uniform(0.8, 0.93)),
        build=float(rng.uniform(0.095, 0.135)),
        leg_length=float(rng.uniform(0.44, 0.52)),
        skin=shade(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 6.0),
        hair_style=_choose(rng, style.hair_styles),
        hair_colour=shade(rng, HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], 6.0),
        hat_colour=palette(style.upper_colours),
        upper_colour=upper,
        upper_pattern=_choose(rng, style.patterns),
        upper_second=second,
        pattern_period=float(rng.uniform(0.035, 0.07)),
        long_sleeves=bool(rng.random() < style.long_sleeve_prob),
        coat=bool(rng.random() < style.coat_prob),
        lower_kind=_choose(rng, style.lower_kinds),
        lower_colour=palette(style.lower_colours),
        shoe_colour=shade(rng, PALETTE[_choose(rng, {"black": 3, "white": 2, "brown": 1, "gray": 1})], 10),
        bag=_choose(rng, style.bags),
        bag_colour=palette({name: 1.0 for name in PALETTE}),
        bag_side=int(rng.choice((-1, 1))),
    )


def make_identity(style: DomainStyle, seed: int, domain_index: int, pid: int) -> Identity:
    """Identities come in pairs sharing a template; a look-alike keeps all but a few attribute groups."""
    rng = rng_for(seed, domain_index, KEY_IDENTITY, pid)
    own = sample_identity(style, rng)
    if rng.random() >= style.lookalike_prob:
        return own
    template = sample_identity(style, rng_for(seed, domain_index, KEY_TEMPLATE, pid // 2))
    groups = rng.choice(len(_LOOKALIKE_GROUPS), size=min(style.lookalike_changes, len(_LOOKALIKE_GROUPS)),
                        replace=False)
    changed = {name: getattr(own, name) for g in groups for name in _LOOKALIKE_GROUPS[g]}
    return dataclasses.replace(template, **changed)
