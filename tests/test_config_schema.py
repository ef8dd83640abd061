"""A setting is declared once: one Field line is validated from YAML and --set, named in errors and listed by
--help-config, with no other change."""

import pytest
from pydantic import Field

from reidmodel.config import ConfigError, ExperimentConfig, ULAConfig, apply_overrides, load_config
from reidmodel.config_help import WIDTH, settings_help
from reidmodel.train import main


class ULAWithTemperature(ULAConfig):
    temperature: float = Field(0.05, gt=0, le=1, description="softmax temperature of the template similarity")


class TemperatureConfig(ExperimentConfig):  # the tree holding the section above
    ula: ULAWithTemperature = Field(default_factory=ULAWithTemperature)


def test_a_new_setting_is_read_from_yaml_and_set(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("preset: cpu\nula:\n  temperature: 1\n")
    assert load_config(path, schema=TemperatureConfig).ula.temperature == 1.0
    config = load_config(None, ["ula.temperature=1e-2"], "cpu", schema=TemperatureConfig)
    assert config.ula.temperature == 0.01 and config.ula.distance == "jaccard"
    assert apply_overrides(config, {"ula.temperature": 0.5}).ula.temperature == 0.5
    assert config.flat()["ula.temperature"] == 0.01


@pytest.mark.parametrize("override, message", [
    ("ula.temperature=2", "ula.temperature=2 is out of range (> 0, <= 1): give a value in that range - softmax"),
    ("ula.temperature=true", "ula.temperature=True is not a number"),
    ("ula.temperatur=0.1", "unknown config key 'ula.temperatur': did you mean ula.temperature?"),
])
def test_a_new_setting_is_checked_as_declared(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], "cpu", schema=TemperatureConfig)
    assert message in str(info.value)
    with pytest.raises(ConfigError, match="unknown config key 'ula.temperature'"):
        load_config(None, ["ula.temperature=0.1"], "cpu")  # the standard schema does not have it


def test_help_config_lists_every_setting_within_100_columns(capsys):
    text = settings_help(TemperatureConfig)
    assert "ula.temperature" in text and "float > 0, <= 1" in text and "softmax temperature" in text
    assert main(["--help-config"]) == 0
    shown = capsys.readouterr().out
    for key in ExperimentConfig().flat():
        assert key == "preset" or f"\n{key} " in shown
    assert "ula.eps                    float > 0" in shown and "1.0 / 0.5" in shown
    assert max(map(len, shown.splitlines())) <= WIDTH


def test_a_file_format_is_documented_from_its_declaration():
    from typing import Annotated, Literal

    from reidmodel.schema import Settings, yaml_schema

    class Point(Settings):
        """A point."""

        kind: Literal["point"] = Field(description="its tag")
        x: float = Field(0.5, ge=0, description="where")

    class Line(Settings):
        """A line."""

        kind: Literal["line"] = Field(description="its tag")

    class File(Settings):
        points: list[Point] = Field(default_factory=list, description="some points")
        shapes: dict[str, Annotated[Point | Line, Field(discriminator="kind")]] = Field(default_factory=dict)
        named: dict[str, int] = Field(default_factory=dict, description="names")

    assert yaml_schema(File, column=12) == [
        "points:      # some points",
        "  - kind: point # its tag",
        "    x: float >= 0 # where; default: 0.5",
        "shapes:",
        "  KEY:       # A point.",
        "    kind: point # its tag",
        "    x: float >= 0 # where; default: 0.5",
        "  KEY:       # A line.",
        "    kind: line # its tag",
        "named: mapping # names",
    ]
