import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vlrepro.config import ConfigError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_validate_in_every_profile():
    raw = repo_params()
    for profile in ("smoke", "default", "paper"):
        p = validate_params({**raw, "profile": profile})
        assert p.profile == profile


def test_profile_overlay_wins_over_base_section():
    raw = repo_params()
    raw["data"]["world"]["seed"] = 5
    raw["profiles"]["smoke"]["data"]["world"]["image_size"] = 48
    smoke = validate_params({**raw, "profile": "smoke"}).data.world
    default = validate_params({**raw, "profile": "default"}).data.world
    assert (smoke.image_size, default.image_size) == (48, raw["data"]["world"]["image_size"])
    assert smoke.seed == default.seed == 5  # keys the overlay does not name come from the base section
    assert smoke.referring.train == raw["profiles"]["smoke"]["data"]["world"]["referring"]["train"]


def test_repo_params_spell_out_the_defaults():
    # params.yaml is what a researcher reads: its base sections must equal the code's defaults.
    p = validate_params(repo_params())
    assert p.data.world == type(p.data.world)()
    assert p.data.baselines == type(p.data.baselines)()


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["data"]["world"].__setitem__("image_sise", 64), "data.world.image_sise: unknown key"),
        (lambda r: r["data"]["world"].__setitem__("image_size", "big"), "data.world.image_size = 'big'"),
        (lambda r: r["data"]["world"].__setitem__("image_size", 0), "data.world.image_size = 0"),
        (lambda r: r.__setitem__("profile", "fast"), "profile = 'fast': allowed values are smoke, default, paper"),
        (lambda r: r["data"]["baselines"].__setitem__("image_only_lr", -1.0), "data.baselines.image_only_lr = -1.0"),
        (lambda r: r["report"].__setitem__("alpha", 2), "report.alpha = 2"),
    ],
)
def test_bad_value_names_the_key(mutate, needle):
    raw = repo_params()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        validate_params(raw)
    assert needle in str(e.value)


def test_unknown_key_lists_allowed_keys():
    raw = repo_params()
    raw["data"]["baselines"]["steps"] = 3
    with pytest.raises(ConfigError, match=r"allowed keys here: image_only_batch_size, image_only_lr"):
        validate_params(raw)


def test_inactive_profile_is_validated_too():
    raw = repo_params()
    raw["profiles"]["paper"]["data"]["wrld"] = {}
    with pytest.raises(ConfigError, match=r"profiles\.paper\.data\.wrld \(profile overlay\): unknown key"):
        validate_params(raw)  # the active profile is `default`


def test_error_in_profile_overlay_points_at_the_overlay():
    raw = repo_params()
    raw["profile"] = "smoke"
    raw["profiles"]["smoke"]["data"]["baselines"] = {"image_only_steps": 0}
    with pytest.raises(ConfigError, match=r"profiles\.smoke\.data\.baselines\.image_only_steps .*greater than"):
        validate_params(raw)


def test_dotted_overrides_and_missing_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({**repo_params(), "profile": "paper"}))
    assert load_params(path, {"seed": 7}).seed == 7
    # an override wins over the active profile's overlay too (paper sets image_size)
    assert load_params(path, {"data.world.image_size": 32}).data.world.image_size == 32
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)


def test_stage_runner_stops_on_bad_params_before_compute(tmp_path):
    raw = repo_params()
    raw["data"]["world"]["image_size"] = "big"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "vlrepro.stage", "00_data"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "data.world.image_size = 'big'" in proc.stderr
    assert not (tmp_path / "reports").exists()


def test_a_stage_loads_only_its_own_sections_without_torch():
    code = (
        "import sys; from vlrepro.config import load_params; "
        f"P = load_params({str(ROOT / 'params.yaml')!r}, sections=['smcim']); "
        "print(P.smcim.train.steps, sorted(m for m in sys.modules if m.startswith(('vlrepro.', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    steps, modules = out.split(" ", 1)
    assert int(steps) == repo_params()["smcim"]["train"]["steps"]
    assert "vlrepro.smcim.config" in modules
    for other in ("vlrepro.amc", "vlrepro.pretrain", "vlrepro.data.config", "vlrepro.report", "torch"):
        assert f"'{other}" not in modules, f"loading the smcim section imported {other}"


def test_sections_are_found_by_name_and_validated_only_when_asked():
    raw = repo_params()
    raw["amc"]["steps"] = -1  # broken, but not a section this load reads
    raw["profiles"]["paper"]["amc"] = {"stepz": 3}
    p = validate_params(raw, sections=["smcim"])
    assert p.smcim.train.steps == raw["smcim"]["train"]["steps"] and not hasattr(p, "amc")
    with pytest.raises(ConfigError, match=r"amc\.steps = -1"):
        validate_params(raw)  # every section: what the report stage and the tests do
    raw = repo_params()
    raw["smcm"] = {}
    with pytest.raises(ConfigError, match=r"smcm: unknown section \(no module vlrepro\.smcm\.config\)"):
        validate_params(raw)
    with pytest.raises(ConfigError, match="unknown section"):
        validate_params(repo_params(), sections=["glipp"])
    raw = repo_params()
    raw["profiles"]["smoke"]["smcm"] = {"steps": 1}  # a typo'd section only in an overlay is caught too
    with pytest.raises(ConfigError, match="smcm: unknown section"):
        validate_params(raw)
