"""Messages in Thai and English from templates a city can edit (``templates.toml``).

:func:`render` fills one template per language and joins them (Thai first by default). A line
whose placeholders (other than ``{unit}``) all came out empty is dropped, so a message without a status page or a trend
has no blank "Status:" line. Unknown placeholders stay as typed (``{oops}``) instead of failing:
a typo in a city's template must not stop a flood warning.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

_FIELD = re.compile(r"\{(\w+)\}")


class _Keep(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Templates:
    def __init__(self, path: str | None = None) -> None:
        text = resources.files("edge_gateway.notify").joinpath("templates.toml").read_text("utf-8")
        self.data: dict[str, Any] = tomllib.loads(text)
        if path:
            custom = tomllib.loads(Path(path).read_text("utf-8"))
            for section, table in custom.items():
                if section == "words" and isinstance(table, dict):
                    for lang, words in table.items():
                        self.data["words"].setdefault(lang, {}).update(words)
                elif isinstance(table, dict):
                    self.data.setdefault(section, {}).update(table)

    def word(self, lang: str, key: str, **fmt: Any) -> str:
        text = str(
            self.data["words"].get(lang, {}).get(key) or self.data["words"]["en"].get(key, key)
        )
        return text.format_map(_Keep({k: str(v) for k, v in fmt.items()})) if fmt else text

    def one(self, lang: str, kind: str, ctx: Mapping[str, Any]) -> str:
        template = str(self.data.get(lang, {}).get(kind) or self.data["en"][kind])
        values = _Keep({k: "" if v is None else str(v) for k, v in ctx.items()})
        out = []
        for line in template.splitlines():
            names = [n for n in _FIELD.findall(line) if n != "unit"]
            if names and all(values.get(n, "x") == "" for n in names):
                continue
            try:
                out.append(string.Formatter().vformat(line, (), values))
            except (ValueError, IndexError, AttributeError):  # e.g. "{value:.2f}" on text
                out.append(line)
        return "\n".join(out).strip()


def render(
    templates: Templates,
    languages: tuple[str, ...],
    kind: str,
    per_lang: Mapping[str, Mapping[str, Any]],
) -> str:
    parts = [templates.one(lang, kind, per_lang[lang]) for lang in languages]
    return "\n\n".join(p for p in parts if p)
