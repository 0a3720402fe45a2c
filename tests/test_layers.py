"""Import layering of the library: each module imports only from its own layer's package or below.

The layers are named in docs/architecture.md ("Code layout"). A module that imports upward makes
an import cycle possible and hides which concept depends on which; a new module must be given a
layer here before the test passes. Function-local imports count too: they are still dependencies.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fastscan"

#: Top-level modules and packages of fastscan, lowest layer first.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundations", {"__init__", "atomic", "jsonable", "lock", "logs", "sheets", "scan", "photons", "baselines", "torch_generator"}),
    ("files", {"io", "simulate", "stores"}),
    ("registration", {"register"}),
    ("geometry", {"geometry", "classical"}),
    ("learning", {"dataset", "models", "metrics", "hallucination"}),
    ("stages", {"train", "restore"}),
    ("composed stages", {"pretrain"}),
    ("products", {"report", "export", "pairing"}),
    ("entry points", {"cli"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def _unit(path: Path) -> str:
    """The top-level module or package a source file belongs to."""
    return path.relative_to(SRC).with_suffix("").parts[0]


def _imported_units(path: Path) -> set[str]:
    """Top-level fastscan units a source file imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "fastscan" else [f"fastscan.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "fastscan" and len(parts) > 1:
                out.add(parts[1] if (SRC / parts[1]).is_dir() or (SRC / f"{parts[1]}.py").is_file() else "__init__")
    return out


SOURCES = sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer() -> None:
    missing = sorted({_unit(p) for p in SOURCES} - set(LAYER_OF))
    assert not missing, f"give {missing} a layer in tests/test_layers.py and docs/architecture.md"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_layers(path: Path) -> None:
    unit = _unit(path)
    if unit not in LAYER_OF:
        pytest.skip("no layer yet (see test_every_module_has_a_layer)")
    upward = sorted(u for u in _imported_units(path) - {unit} if LAYER_OF.get(u, -1) >= LAYER_OF[unit])
    assert not upward, f"{path.relative_to(SRC)} ({LAYERS[LAYER_OF[unit]][0]}) imports {upward} of the same or a higher layer: " + ", ".join(
        f"{u} ({LAYERS[LAYER_OF[u]][0]})" for u in upward if u in LAYER_OF
    )


def test_the_layering_finds_an_upward_import(tmp_path: Path) -> None:
    """The check reads function-local and `from fastscan import x` imports, not only top-level ones."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from fastscan import restore\n    import fastscan.cli.main\n")
    assert _imported_units(src) == {"restore", "cli"}
