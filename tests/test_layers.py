"""Imports inside the package point down the layers only (a module may import its own layer and the ones below).

From the bottom: shared helpers (errors, the key=value grammar, tables, devices, packaged assets, the paper's numbers);
the block (nn, pure torch); the glue (the hook and its PATCHES, one module per ultralytics seam, the package root that
installs it, the model-YAML table); data and evaluation; export, bench and compare; analysis; the commands at the top
(cli, demo, recipes). Every import counts, at module level or inside a function, since a lazy import is still a
dependency. A module that belongs to no layer fails too, so a new one gets a place on purpose.
"""

from __future__ import annotations

from pathlib import Path

from helpers import imports, modules

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # bottom first; a prefix names a module and its submodules
    ("helpers", ("fine_yolo.errors", "fine_yolo.args", "fine_yolo.tables", "fine_yolo.devices", "fine_yolo.assets",
                 "fine_yolo.paper")),
    ("nn", ("fine_yolo.nn",)),
    ("glue", ("fine_yolo", "fine_yolo._hook", "fine_yolo.glue", "fine_yolo.models")),
    ("data/eval", ("fine_yolo.data", "fine_yolo.eval")),
    ("export/bench/compare", ("fine_yolo.export", "fine_yolo.bench", "fine_yolo.compare")),
    ("analysis", ("fine_yolo.analysis",)),
    ("commands", ("fine_yolo.cli", "fine_yolo.demo", "fine_yolo.recipes")),
)


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of ``module`` (the longest matching prefix; ``fine_yolo`` itself only as the package
    root), None when no layer names it."""
    best, length = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            hit = module == p or (p != "fine_yolo" and module.startswith(p + "."))
            if hit and len(p) > length:
                best, length = i, len(p)
    return best


def upward_edges(root: Path, package: str = "fine_yolo") -> list[str]:
    """Every import of a module in a higher layer, and every module in no layer, as one line each."""
    known = modules(root, package)
    problems = []
    for name, path in known.items():
        here = layer_of(name)
        if here is None:
            problems.append(f"{name} belongs to no layer (tests/test_layers.py LAYERS)")
            continue
        for target in sorted(imports(name, path, known)):
            there = layer_of(target)
            if there is not None and there > here:
                problems.append(f"{name} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    return problems


def test_imports_point_down_the_layers():
    assert len(modules(ROOT)) > 40  # the walk found the package
    assert upward_edges(ROOT) == []


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_planted_upward_import_and_a_module_without_a_layer_are_caught(tmp_path):
    tree = _tree(tmp_path, {
        "fine_yolo/__init__.py": "",
        "fine_yolo/nn/__init__.py": "",
        "fine_yolo/nn/fine.py": "def f():\n    from ..export import engine\n",  # lazy and relative: still counted
        "fine_yolo/export/__init__.py": "",
        "fine_yolo/export/engine.py": "from fine_yolo.nn.fine import f\nimport fine_yolo.glue\n",  # both down
        "fine_yolo/glue/__init__.py": "from fine_yolo import cli\n",
        "fine_yolo/cli.py": "import fine_yolo.nn.fine\n",
        "fine_yolo/extra.py": "",
    })
    assert upward_edges(tree) == [
        "fine_yolo.extra belongs to no layer (tests/test_layers.py LAYERS)",
        "fine_yolo.glue (glue) imports fine_yolo.cli (commands)",
        "fine_yolo.nn.fine (nn) imports fine_yolo.export.engine (export/bench/compare)",
    ]
