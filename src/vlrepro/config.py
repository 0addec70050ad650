"""``params.yaml``: the one source of settings, validated before any compute.

The file holds the default-profile values of every section plus a ``profiles`` mapping of overrides;
``profile: smoke`` (or ``paper``) lays ``profiles.smoke`` over the sections. Validation names the offending
key and the allowed values::

    params.yaml: data.world.image_size = 'big': Input should be a valid integer (expected int)

Sections are registered by name, not imported here: section ``<name>`` is the pydantic model ``Params`` of
the module ``vlrepro.<name>.config``, so a setting and the code that reads it live side by side, and a stage
that loads only its own sections (``load_params(sections=["smcim"])``) neither imports nor depends on any
other paper's settings: a change to one paper's section re-runs only that paper's stages. Loading without
``sections`` validates every section of the file (the report stage and the tests do). None of this imports
torch.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Profile = Literal["smoke", "default", "paper"]
PROFILES: tuple[str, ...] = get_args(Profile)
TOP_LEVEL: tuple[str, ...] = ("profile", "seed", "profiles")  # the keys of params.yaml that are not sections


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A params.yaml problem, with the key path and what is allowed."""


SectionT = TypeVar("SectionT", bound=Section)


def section_class(name: str, source: str = "params.yaml") -> type[Section]:
    """The model of section ``name``: ``vlrepro.<name>.config.Params``."""
    module = f"vlrepro.{name}.config"
    try:
        cls = importlib.import_module(module).Params
    except ModuleNotFoundError as e:
        if e.name is not None and module.startswith(e.name):  # the section's own module, not one it imports
            raise ConfigError(f"{source}: {name}: unknown section (no module {module}); check the spelling") from None
        raise
    except AttributeError:
        raise ConfigError(f"{module} has no `Params` (the model of the {name!r} section)") from None
    if not (isinstance(cls, type) and issubclass(cls, Section)):
        raise ConfigError(f"{module}.Params is not a vlrepro.config.Section")
    return cls


def with_overrides(section: SectionT, overrides: dict[str, Any], where: str) -> SectionT:
    """``section`` with dotted ``overrides`` (``{"model.levels": 1}``) applied and validated again, its
    ``variants`` emptied: a paper's variant. Errors name ``where`` (``smcim.variants.levels_1``) and the key."""
    raw = section.model_dump(exclude={"variants"})
    for dotted, value in overrides.items():
        node, path = raw, dotted.split(".")
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{where}: {dotted!r} is not a key of the section")
            node = node[part]
        if path[-1] not in node:
            raise ConfigError(f"{where}: {dotted!r} is not a key of the section")
        node[path[-1]] = value
    try:
        return type(section).model_validate({**raw, "variants": {}})
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _params_model(names: Sequence[str], source: str) -> type[BaseModel]:
    annotations: dict[str, Any] = {"profile": Profile, "seed": int}
    namespace: dict[str, Any] = {"__annotations__": annotations, "seed": Field(0, ge=0)}
    for name in names:
        cls = section_class(name, source)
        annotations[name] = cls
        namespace[name] = cls()
    namespace["model_config"] = ConfigDict(extra="forbid", frozen=True)
    return type("Params", (BaseModel,), namespace)


def find_params_file(start: Path | None = None) -> Path:
    """``$VLREPRO_PARAMS`` if set, else the nearest ``params.yaml`` at or above ``start`` (default: cwd)."""
    if env := os.environ.get("VLREPRO_PARAMS"):
        return Path(env)
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params.yaml").is_file():
            return folder / "params.yaml"
    raise ConfigError(f"no params.yaml in {here} or its parents; run from the repository or set VLREPRO_PARAMS")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _format(err: ValidationError, source: str, model: type[BaseModel], overlay_keys: set[str], profile: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if any(loc == k or loc.startswith(k + ".") for k in overlay_keys):
            loc = f"profiles.{profile}.{loc} (profile overlay)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, e["loc"][:-1])
            lines.append(f"{source}: {loc}: unknown key; allowed keys here: {', '.join(allowed)}")
        else:
            lines.append(f"{source}: {loc} = {e.get('input')!r}: {e['msg']}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _leaf_keys(d: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _leaf_keys(v, key + ".") if isinstance(v, dict) and v else {key}
    return out


def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _validate(model: type[BaseModel], raw: dict, overlay: dict, profile: str, source: str) -> BaseModel:
    try:
        return model.model_validate(_merge(raw, overlay))
    except ValidationError as e:
        raise ConfigError(_format(e, source, model, _leaf_keys(overlay), profile)) from None


def validate_params(
    raw: dict[str, Any],
    source: str = "params.yaml",
    overrides: dict[str, Any] | None = None,
    sections: Sequence[str] | None = None,
) -> BaseModel:
    """Validate a params mapping and return the frozen settings of its active profile.

    ``sections``: the sections to validate and return (default: every one in ``raw``); the others are not
    read. ``overrides`` are dotted keys (``{"data.world.seed": 3}``) applied last, over the profile overlay.
    Every profile is validated, not only the active one, so a typo under ``profiles.paper`` stops a
    ``default`` run too, long before anyone reaches the GPU cluster.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    profiles = raw.get("profiles") or {}
    profile = raw.get("profile", "default")
    if profile not in PROFILES:
        raise ConfigError(f"{source}: profile = {profile!r}: allowed values are {', '.join(PROFILES)}")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ConfigError(f"{source}: profiles.{unknown[0]}: unknown profile; allowed: {', '.join(PROFILES)}")
    if sections is None:  # every section the file names, in its base or in a profile's overlay
        names = list(dict.fromkeys(k for d in (raw, *profiles.values()) for k in (d or {}) if k not in TOP_LEVEL))
    else:
        names = list(sections)
    keep = {*names, "profile", "seed"}
    model = _params_model(names, source)

    def only(d: dict) -> dict:
        return {k: v for k, v in d.items() if k in keep}

    base = only(raw)
    for other in PROFILES:
        if other != profile:
            _validate(model, {**base, "profile": other}, only(profiles.get(other) or {}), other, source)
    overlay = copy.deepcopy(only(profiles.get(profile) or {}))
    for dotted, value in (overrides or {}).items():
        _set_dotted(overlay, dotted, value)
    return _validate(model, base, overlay, profile, source)


def load_params(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, sections: Sequence[str] | None = None
) -> BaseModel:
    """Load and validate ``params.yaml`` (default: :func:`find_params_file`); see :func:`validate_params`."""
    path = Path(path) if path else find_params_file()
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate_params(raw, str(path), overrides, sections)
