"""One decision per value: the workflow's defaults live in ``workflow/schemas/config.schema.yaml``.

Library functions named after a config key default to the schema's value or have no default (the
caller must pass it); ``fastscan.train.DEFAULTS`` is the schema's ``train`` section.
"""

import inspect
from pathlib import Path

import pytest
import yaml

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
RESTORE = SCHEMA["properties"]["restore"]["properties"]

#: Parameters named like a restore.* key that are deliberately another value.
#: ``device``: the library takes a resolved torch device (the config's ``auto`` is resolved by the
#: scripts and the command line with fastscan.train.resolve_device); the CPU by default, so results do
#: not depend on the machine. ``precision`` of FOV restorations: always float32 (restore.precision is
#: for slides and series), so the reported metrics do not depend on the machine.
OTHER_VALUES = {"device": "*", "precision": {"restore_fov", "predict_image"}}


def _restore_functions():
    from fastscan.restore.engine import TileEngine, predict_image
    from fastscan.restore.fov import restore_fov
    from fastscan.restore.series import restore_series
    from fastscan.restore.slide import prepare_slide, restore_slide

    return {"restore_slide": restore_slide, "prepare_slide": prepare_slide, "restore_series": restore_series, "restore_fov": restore_fov,
            "TileEngine": TileEngine, "predict_image": predict_image}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_restore_functions()))
def test_restore_functions_do_not_contradict_the_schema(name):
    params = inspect.signature(_restore_functions()[name]).parameters
    shared = [p for p in params.values() if "default" in RESTORE.get(p.name, {})]
    assert shared
    for p in shared:
        other = OTHER_VALUES.get(p.name, ())
        if other == "*" or name in other:
            continue
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}({p.name}) must be keyword-only"
        if p.default is not inspect.Parameter.empty:
            assert p.default == RESTORE[p.name]["default"], f"{name}({p.name}={p.default!r}) contradicts restore.{p.name}: {RESTORE[p.name]['default']!r}"


def _schema_defaults(node):
    """The defaults of an object schema's properties, nested objects as dicts of theirs."""
    out = {}
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub and sub.get("default") == {}:
            out[key] = _schema_defaults(sub)
        elif "default" in sub:
            out[key] = sub["default"]
    return out


def test_train_defaults_are_the_schema_defaults():
    """train.DEFAULTS is the library's minimal schedule and the schema's train defaults, one value
    each; config/config.yaml sets the workflow's own schedule on top."""
    from fastscan.train import DEFAULTS

    schema = _schema_defaults(SCHEMA["properties"]["train"])
    assert set(DEFAULTS) == set(schema)
    for key, value in DEFAULTS.items():
        if key == "architecture":
            # Filled in by fastscan.models.resolve_architecture, not by resolve_config.
            assert value == {}
            continue
        assert value == schema[key], f"train.{key}"
