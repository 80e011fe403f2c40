"""The spec: pass/fail limits from a TOML file or a shipped preset (station-model.md §4).

A missing key means no limit. Unknown sections or keys are refused, so a typo never
silently removes a limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from goggleqc.errors import SpecError

#: section -> (reason code, {field: unit}) for defect sections, limits per zone
DEFECT_SECTIONS = {
    "scratches": ("scratch", {"length_mm": "mm", "width_mm": "mm", "length_px": "px", "contrast": ""}),
    "coating": ("coating", {"area_mm2": "mm²", "area_px": "px²", "contrast": ""}),
    "spots": ("spot", {"diameter_mm": "mm", "diameter_px": "px", "contrast": ""}),
}
#: section -> (reason code, key, result field, bound, unit) for whole-lens measures
LENS_SECTIONS = {
    "haze": ("haze", "max_pct", "haze_pct", "max", "%"),
    "transmittance": ("transmittance", "min_pct", "transmittance_pct", "min", "%"),
}
ZONES = ("central", "marginal")
_KEY = re.compile(r"^(max|min)_(.+?)(?:_(central|marginal))?$")


@dataclass(frozen=True)
class Limit:
    """One limit: ``field`` of ``code`` objects in ``zone`` (None = any zone) is at most/least ``value``."""

    code: str
    field: str
    bound: str
    value: float
    unit: str
    zone: str | None = None


@dataclass(frozen=True)
class Spec:
    name: str
    marginal_width_mm: float = 5.0
    limits: tuple[Limit, ...] = ()
    source: dict = field(default_factory=dict)

    def limits_for(self, code: str) -> list[Limit]:
        return [lim for lim in self.limits if lim.code == code]


def presets() -> dict[str, Path]:
    """Shipped presets by name (file stem)."""
    folder = resources.files("goggleqc") / "specs"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".toml")}


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where} must be a number, not {value!r}")
    return float(value)


def parse_spec(data: dict, name: str = "spec") -> Spec:
    """Build a :class:`Spec` from parsed TOML."""
    limits: list[Limit] = []
    marginal = 5.0
    for section, table in data.items():
        if not isinstance(table, dict):
            raise SpecError(f"{name}: top-level key {section!r} must be a [section]")
        if section == "zones":
            for key, value in table.items():
                if key != "marginal_width_mm":
                    raise SpecError(f"{name}: unknown key [zones] {key}; the only key is marginal_width_mm")
                marginal = _number(value, f"{name}: [zones] marginal_width_mm")
                if marginal < 0:
                    raise SpecError(f"{name}: [zones] marginal_width_mm must be ≥ 0")
        elif section in LENS_SECTIONS:
            code, key_name, field_, bound, unit = LENS_SECTIONS[section]
            for key, value in table.items():
                if key != key_name:
                    raise SpecError(f"{name}: unknown key [{section}] {key}; expected {key_name}")
                limits.append(Limit(code, field_, bound, _number(value, f"{name}: [{section}] {key}"), unit))
        elif section in DEFECT_SECTIONS:
            code, fields = DEFECT_SECTIONS[section]
            for key, value in table.items():
                m = _KEY.match(key)
                if not m or m.group(2) not in fields:
                    allowed = ", ".join(f"max_{f}_central" for f in fields)
                    raise SpecError(f"{name}: unknown key [{section}] {key}; keys look like {allowed} (or _marginal, or no zone)")
                bound, field_, zone = m.groups()
                limits.append(Limit(code, field_, bound, _number(value, f"{name}: [{section}] {key}"), fields[field_], zone))
        else:
            known = ", ".join(["zones", *LENS_SECTIONS, *DEFECT_SECTIONS])
            raise SpecError(f"{name}: unknown section [{section}]; known sections are {known}")
    return Spec(name=name, marginal_width_mm=marginal, limits=tuple(limits), source=data)


def load_spec(path_or_preset: str | Path) -> Spec:
    """Load a spec TOML file, or a shipped preset by name (see :func:`presets`)."""
    text = str(path_or_preset)
    shipped = presets()
    if text in shipped:
        path = shipped[text]
    else:
        path = Path(text)
        if not path.exists():
            raise SpecError(f"spec {text!r} is neither a file nor a preset; presets: {', '.join(sorted(shipped))}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    return parse_spec(data, name=path.stem if text not in shipped else text)


DEFAULT_SPEC = "en166-clear"
