"""``python -m reidmodel.train --help-config``: every setting, generated from its declaration in
reidmodel/config.py, so the list cannot drift from what validation accepts."""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

from pydantic import BaseModel

from reidmodel.config import ExperimentConfig, config_from_dict
from reidmodel.schema import type_text

WIDTH = 100  # readable in a 100-column terminal
INDENT = "    "


def settings_help(schema: type[ExperimentConfig] = ExperimentConfig) -> str:
    """One block per section; per setting a line (dotted name, what it takes, its paper / cpu default) and its
    help below it."""
    paper, cpu = (config_from_dict({"preset": name}, schema=schema).flat() for name in ("paper", "cpu"))
    sections = [(section, inspect.getdoc(model), [(f"{section}.{name}", type_text(field), field.description or "")
                                                  for name, field in model.model_fields.items()])
                for section, model in _sections(schema)]
    rows = [row for _, _, section_rows in sections for row in section_rows]
    name_width, type_width = (max(len(row[column]) for row in rows) for column in (0, 1))
    lines = ["Settings of python -m reidmodel.train: --set SECTION.KEY=VALUE, or KEY: VALUE under SECTION: in",
             "a --config YAML file. Defaults: 'paper / cpu' for the two presets, one value when they agree.", "",
             f"{'setting':<{name_width}}  {'takes':<{type_width}}  default (paper / cpu)"]
    for section, doc, section_rows in sections:
        lines += ["", f"{section}: {doc}"]
        for key, takes, help_text in section_rows:
            lines.append(f"{key:<{name_width}}  {takes:<{type_width}}  {_default(paper[key], cpu[key])}")
            lines += textwrap.wrap(help_text, WIDTH, initial_indent=INDENT, subsequent_indent=INDENT)
    return "\n".join(lines)


def _sections(schema: type[ExperimentConfig]) -> list[tuple[str, type[BaseModel]]]:
    return [(name, field.annotation) for name, field in schema.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)]


def _default(paper: Any, cpu: Any) -> str:
    return _shown(paper) if paper == cpu else f"{_shown(paper)} / {_shown(cpu)}"


def _shown(value: Any) -> str:
    """A value as it is written in YAML and --set."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)
