"""``params.yaml``: the one source of settings, validated before any compute.

The file holds the default-profile values of every stage section plus a ``profiles`` mapping of
overrides; ``profile: smoke`` (or ``paper``) lays ``profiles.smoke`` over the sections. Validation
names the offending key and the allowed values::

    params.yaml: data.world.image_size = 'big': Input should be a valid integer (expected int)

Each stage section is a pydantic model owned by the module that uses it, so a setting and the code
that reads it live side by side.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Profile = Literal["smoke", "default", "paper"]
PROFILES: tuple[str, ...] = get_args(Profile)


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A params.yaml problem, with the key path and what is allowed."""


def _stage_sections() -> dict[str, type[Section]]:
    # Imported here so that `vlrepro.config` stays importable without torch for a quick check.
    from vlrepro.amc.config import AMCParams
    from vlrepro.baselines import BaselineParams
    from vlrepro.data.real.config import RealDataConfig
    from vlrepro.data.world.config import WorldConfig
    from vlrepro.pretrain.config import PretrainParams
    from vlrepro.smcim.config import SMCIMParams

    class DataParams(Section):
        world: WorldConfig = WorldConfig()
        baselines: BaselineParams = BaselineParams()
        real: RealDataConfig = RealDataConfig()

    class ReportParams(Section):
        title: str = "vlrepro — reproducibility report"
        alpha: float = Field(0.05, gt=0, lt=1, description="significance level of claim tests")

    sections = {"data": DataParams, "pretrain": PretrainParams, "amc": AMCParams, "smcim": SMCIMParams}
    return {**sections, "report": ReportParams}


def _params_model() -> type[BaseModel]:
    sections = _stage_sections()
    annotations: dict[str, Any] = {"profile": Profile, "seed": int}
    namespace: dict[str, Any] = {"__annotations__": annotations, "seed": Field(0, ge=0)}
    for name, cls in sections.items():
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
    raw: dict[str, Any], source: str = "params.yaml", overrides: dict[str, Any] | None = None
) -> BaseModel:
    """Validate a params mapping and return the frozen settings of its active profile.

    ``overrides`` are dotted keys (``{"data.world.seed": 3}``) applied last, over the profile overlay.
    Every profile is validated, not only the active one, so a typo under ``profiles.paper`` stops a
    ``default`` run too, long before anyone reaches the GPU cluster.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    profiles = raw.pop("profiles", {}) or {}
    profile = raw.get("profile", "default")
    if profile not in PROFILES:
        raise ConfigError(f"{source}: profile = {profile!r}: allowed values are {', '.join(PROFILES)}")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ConfigError(f"{source}: profiles.{unknown[0]}: unknown profile; allowed: {', '.join(PROFILES)}")
    model = _params_model()
    for other in PROFILES:
        if other != profile:
            _validate(model, {**raw, "profile": other}, profiles.get(other) or {}, other, source)
    overlay = copy.deepcopy(profiles.get(profile) or {})
    for dotted, value in (overrides or {}).items():
        _set_dotted(overlay, dotted, value)
    return _validate(model, raw, overlay, profile, source)


def load_params(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> BaseModel:
    """Load and validate ``params.yaml`` (default: :func:`find_params_file`); see :func:`validate_params`."""
    path = Path(path) if path else find_params_file()
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return validate_params(raw, str(path), overrides)
