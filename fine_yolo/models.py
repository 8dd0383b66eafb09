"""FINE model YAMLs: every ``<upstream>-fine.yaml`` is its ultralytics YAML with FINE at each top-down fusion stage.

One rule, no table: a *top-down fusion stage* is a two-input ``Concat`` row one of whose inputs is an upsampler row
(:data:`UPSAMPLERS`) reading one layer. Its ``Concat`` becomes a ``FINEConcat`` row (paper eq. 3: ``Concat(up,
FINE(low, high))``, :class:`fine_yolo.nn.fusion.FINEConcat`) with empty arguments, and the glue picks FINE's arguments
at build from the maps it probes (:func:`fine_yolo.glue.fine_rows.placement_k`): k = stride of the model's coarsest
high map / stride of this stage's high map, r = 2, head dim 16 (:func:`fine_yolo.nn.fine.head_dim_for` where 16 does
not divide C). The paper's "k=1 at P4<-P5 and k=2 at P3<-P4" (§5.3.2) puts both stages' tokens on the stride-32 grid;
the rule keeps every stage on the coarsest grid: a P2<-P3 stage gets k=4, a P6 model k=1, 2, 4. Every other row,
index, comment and state-dict name is upstream's, so a baseline checkpoint transfers by name, bit-exact.

Nothing is committed per model: :func:`fine_yaml_path` renders ``yolov8s-p2-fine.yaml`` (or ``path/to/mine-fine.yaml``)
from the YAML ultralytics resolves for ``yolov8s-p2.yaml`` (``path/to/mine.yaml``) into a content-addressed cache, when
``check_file`` (the start-up hook's ``bare_names`` patch) is asked for a missing ``*-fine.yaml``; ``fine-yolo yaml``
writes one where the user wants it to read or edit. :func:`catalogue` lists the installed upstream YAMLs this covers.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from fine_yolo.args import Command, Option
from fine_yolo.errors import FineYoloError, UsageError
from fine_yolo.glue.fine_rows import FUSION_ROW
from fine_yolo.tables import markdown_table

# modules that carry a top-down path up one level: a nearest nn.Upsample (FINE reads its input back by a strided
# slice) or a learned one (YOLOv6's nn.ConvTranspose2d, ultralytics' ConvTranspose: its input is a third row input)
UPSAMPLERS = ("nn.Upsample", "nn.ConvTranspose2d", "ConvTranspose")
_TASK_SUFFIX = {"-seg": "segment", "-pose": "pose", "-obb": "obb", "-sem": "semantic", "-depth": "depth"}


class ModelNameError(UsageError):
    """A model name that does not follow ``<baseline>-fine.yaml``."""


class FineYamlError(FineYoloError, ValueError):
    """An upstream YAML FINE cannot be placed in; the message names the file and the row."""


class NotAModelYamlError(FineYamlError):
    """The YAML has no ``backbone:`` and ``head:`` row lists (a data YAML, say)."""


class Stage(NamedTuple):
    """One top-down fusion stage (upstream indices): Concat row ``row`` fuses the upsampled ``high`` with ``low``."""

    row: int
    low: int
    high: int


class FineModel(NamedTuple):
    """An installed upstream YAML FINE covers: its path relative to ultralytics/cfg/models, family, task, stages."""

    upstream: str
    family: str
    task: str
    stages: tuple[Stage, ...]


# What no FINE YAML covers, and why (the docs' table beside the placement table).
NOT_COVERED: dict[str, str] = {
    "classification (`*-cls*`, every family)": "no neck: backbone, then the Classify head; there is no top-down "
    "fusion stage for FINE to sit in",
    "`yolov8-world*`, `yoloe-*`": "open-vocabulary models: building them loads a CLIP/MobileCLIP text encoder "
    "(a download) and ultralytics builds them as WorldModel/YOLOEModel, not from a plain YAML",
    "RT-DETR R18 (the paper's Table 1-3 model)": "ultralytics ships no ResNet-18 RT-DETR YAML (only `rtdetr-resnet50`, "
    "`rtdetr-resnet101` and the HGNetv2 `rtdetr-l`/`rtdetr-x`); `rtdetr-resnet50-fine` is the paper's R50 model",
}
_NEEDS_DOWNLOAD = re.compile(r"(^yoloe-|-world)")

_HEADER = (
    "# fine_yolo: {name} = ultralytics {upstream} + FINE (arXiv 2606.14005) at every top-down fusion stage.\n"
    "# Each top-down Concat row is a FINEConcat row (eq. 3: Concat(up, FINE(low, high))); every layer index is\n"
    "# upstream's, so baseline checkpoints transfer by name. FINE's args [k, r, head_dim, attention, pool] are left\n"
    "# to the placement rule at build: k = stride of the model's coarsest high map / stride of this stage's high map\n"
    "# (1 at P4<-P5, 2 at P3<-P4, 4 at P2<-P3), r = 2, head dim 16 (where 16 does not divide the channels: the\n"
    "# smallest multiple of 8 above 16 that does, fine_yolo.nn.fine.head_dim_for).\n"
    "# Written by fine_yolo from the installed ultralytics YAML.\n\n"
)


def baseline_name(fine_model: str) -> str:
    """``yolov8s-fine.yaml`` -> ``yolov8s.yaml``; ``yolo11n-seg-fine.yaml`` -> ``yolo11n-seg.yaml``."""
    name = Path(fine_model).name
    if "-fine" not in name:
        raise ModelNameError(f"'{fine_model}' is not a FINE model name (expected '<baseline>-fine.yaml')")
    return name.replace("-fine", "")


def is_rtdetr(model: str) -> bool:
    """Whether ultralytics builds ``model`` through ``RTDETR`` (the rule of the ``yolo`` command: "rtdetr" in the
    file name). ``YOLO("rtdetr-l.yaml")`` fails; a trained RT-DETR ``.pt`` loads through either class."""
    return "rtdetr" in Path(str(model)).stem


def model_class(model: str):
    """``ultralytics.RTDETR`` for RT-DETR YAMLs, else ``ultralytics.YOLO`` (imports ultralytics)."""
    import ultralytics

    return ultralytics.RTDETR if is_rtdetr(model) else ultralytics.YOLO


def build(model: str):
    """The ultralytics model object for a YAML or checkpoint: ``RTDETR(model)`` or ``YOLO(model, verbose=False)``."""
    cls = model_class(model)
    return cls(model) if is_rtdetr(model) else cls(model, verbose=False)


def _absolute(f: int | list, i: int) -> list[int]:
    """Row ``i``'s inputs as absolute layer indices (ultralytics: a negative index counts back from row ``i``)."""
    return [x if x >= 0 else i + x for x in ([f] if isinstance(f, int) else f)]


def top_down_stages(d: dict) -> list[Stage]:
    """Every top-down fusion stage of a parsed model YAML, in row order.

    A stage is a two-input Concat row one of whose inputs is an upsampler row (:data:`UPSAMPLERS`) reading one layer
    (``high``); the other input is ``low``. Bottom-up (PAN) Concats read a strided conv instead and are not stages.
    """
    rows = d.get("backbone", []) + d.get("head", [])
    stages = []
    for i, (f, _, module, _) in enumerate(rows):
        if module != "Concat" or isinstance(f, int) or len(f) != 2:
            continue
        a, b = _absolute(f, i)
        for up, low in ((a, b), (b, a)):
            if rows[up][2] in UPSAMPLERS and len(_absolute(rows[up][0], up)) == 1:
                stages.append(Stage(i, low, _absolute(rows[up][0], up)[0]))
                break
    return stages


def _row_lines(lines: list[str]) -> list[int]:
    """Line index of every backbone/head row, in row order (one row per ``- [`` line, as every upstream YAML has)."""
    out, inside = [], False
    for n, line in enumerate(lines):
        if re.match(r"^(backbone|head):", line):
            inside = True
        elif re.match(r"^\S", line):  # another top-level key ends the row lists
            inside = False
        elif inside and re.match(r"^\s*- \[", line):
            out.append(n)
    return out


def _nearest(row: list) -> bool:
    """Whether an upstream row is a nearest ``nn.Upsample`` by an integer factor (input: ``up[..., ::s, ::s]``)."""
    _, _, module, args = row
    args = list(args) + [None, None, "nearest"][len(args):]  # nn.Upsample(size=None, scale_factor=None, mode="nearest")
    return module == "nn.Upsample" and isinstance(args[1], int) and args[2] == "nearest"


@functools.lru_cache(maxsize=256)  # a pure function of its arguments; every build of a FINE name renders (~20 ms)
def render_fine_yaml(upstream_text: str, source: str, name: str | None = None) -> str:
    """Return the FINE YAML of an upstream YAML's text: each top-down fusion stage's Concat row rewritten in place as
    ``[[up, low], 1, FINEConcat, []]`` (plus ``high`` as a third input where the upsampler is not a nearest
    ``nn.Upsample``), its comment kept with what FINE reads appended; every other line as upstream wrote it.

    Raises:
        FineYamlError: no top-down fusion stage, a stage whose Concat lists the low map first, or a row the text
            rewrite cannot find on one line; each names ``source`` and the row.
    """
    import yaml

    d = yaml.safe_load(upstream_text)
    if not isinstance(d, dict) or not isinstance(d.get("head"), list) or not isinstance(d.get("backbone"), list):
        raise NotAModelYamlError(f"{source}: not a model YAML (no backbone: and head: row lists)")
    rows = d["backbone"] + d["head"]
    stages = top_down_stages(d)
    if not stages:
        raise FineYamlError(f"{source}: no top-down fusion stage (a two-input Concat of an upsampled map, "
                            f"{' / '.join(UPSAMPLERS)}, and a finer map), so there is nowhere to put FINE")
    lines = upstream_text.splitlines(keepends=True)
    row_lines = _row_lines(lines)
    if len(row_lines) != len(rows):
        raise FineYamlError(f"{source}: found {len(row_lines)} row lines for {len(rows)} rows; write each backbone/"
                            "head row on one line starting with '- ['")
    for stage in stages:
        f = rows[stage.row][0]
        up = _absolute(f, stage.row)[0]
        if up == stage.low:
            raise FineYamlError(
                f"{source}: YAML row {stage.row} {rows[stage.row]} lists the low map (layer {stage.low}) before the "
                f"upsampled one: FINEConcat keeps Concat's order with the upsampled map first; swap the two inputs "
                f"(the next layer's input channels then come in the other order, so train that baseline that way)")
        n = row_lines[stage.row]
        m = re.match(r"^(\s*- )(\[.*?\]\s*,\s*1\s*,\s*Concat\s*,\s*\[1\]\s*\])(\s*#.*)?$", lines[n].rstrip("\n"))
        if not m:
            raise FineYamlError(f"{source}: YAML row {stage.row} is a top-down Concat but its line is not "
                                f"'- [[up, low], 1, Concat, [1]]': {lines[n].strip()}")
        nearest = _nearest(rows[up])
        inputs = list(f) if nearest else [*f, stage.high]
        fine = f"FINE(low={stage.low}, high={stage.high})"
        comment = f"{m.group(3)} + {fine}" if m.group(3) else f"  # {fine}"
        lines[n] = f"{m.group(1)}[{inputs}, 1, {FUSION_ROW}, []]{comment}\n"
    return _HEADER.format(name=name or f"{Path(source).stem}-fine.yaml", upstream=source) + "".join(lines)


def _candidates(model: str) -> list[str]:
    """Spellings under which ultralytics may hold ``model``: as typed, then scale-free (``yolov8n-p2.yaml`` ->
    ``yolov8-p2.yaml``, ultralytics' own ``yaml_model_load`` rule), each also v-less (``yolov11n`` -> ``yolo11n``:
    users type both, ultralytics names YOLO11/12/26 without the v)."""
    folder, name = os.path.split(model)  # the rules read the file name only, never the folders above it
    names = [name, re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)]
    names += [re.sub(r"^yolov(1[1-9]|2\d)", r"yolo\1", n) for n in names]
    return [os.path.join(folder, n) for n in dict.fromkeys(names)]


def find_upstream(model: str) -> Path | None:
    """The YAML ultralytics resolves for ``model`` (a path, or a bare name it finds in its cfg/models), or None."""
    from ultralytics.utils.checks import check_yaml

    for candidate in _candidates(str(model)):
        found = check_yaml(candidate, hard=False)
        if found:
            return Path(found)
    return None


def fine_yaml_path(name: str) -> Path | None:
    """Resolve a missing ``<upstream>-fine.yaml`` (bare name or path): render it from the upstream YAML ultralytics
    finds and return the rendered file (under ``FINE_YOLO_CACHE``, default ultralytics' config dir ``/fine_yolo``,
    in a folder named by a hash of its text, written atomically: DDP workers may render it at once). None when the
    name is not a FINE name or no upstream model YAML exists; FineYamlError when FINE cannot be placed in it."""
    if "-fine" not in Path(name).stem or not name.endswith((".yaml", ".yml")):
        return None
    upstream = find_upstream(str(Path(name).with_name(baseline_name(name))))
    if upstream is None:
        return None
    try:
        text = render_fine_yaml(upstream.read_text(encoding="utf-8"), _display(upstream), _fine_name(upstream))
    except NotAModelYamlError:  # a data YAML: ultralytics' own not-found
        return None
    folder = cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16]
    path = folder / _fine_name(upstream)
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return path


def cache_dir() -> Path:
    """Where rendered FINE YAMLs go: ``$FINE_YOLO_CACHE``, else ultralytics' (writable) config dir ``/fine_yolo``."""
    if os.environ.get("FINE_YOLO_CACHE"):
        return Path(os.environ["FINE_YOLO_CACHE"])
    from ultralytics.utils import USER_CONFIG_DIR

    return Path(USER_CONFIG_DIR) / "fine_yolo"


def _fine_name(upstream: Path) -> str:
    return f"{upstream.stem}-fine{upstream.suffix}"


def _display(upstream: Path) -> str:
    """``v8/yolov8-p2.yaml`` for ultralytics' own YAMLs (as the docs cite them), else the path."""
    from ultralytics.utils import ROOT

    root = Path(ROOT) / "cfg" / "models"
    return upstream.relative_to(root).as_posix() if upstream.is_relative_to(root) else str(upstream)


# ------------------------------------------------------------------------------------------ what is covered


def _family(folder: str) -> str:
    """README family of an ultralytics cfg/models folder: ``v8`` -> ``YOLOv8``, ``26`` -> ``YOLO26``."""
    return "RT-DETR" if folder == "rt-detr" else f"YOLO{folder}"


def task_of(name: str) -> str:
    """The task of a model by its name's task token (``-seg``, ``-pose``, ``-obb``, ``-sem``, ``-depth``; else
    detect), the rule of ultralytics' own file names."""
    stem = Path(name).stem.replace("-fine", "")
    return next((task for token, task in _TASK_SUFFIX.items() if f"{token}-" in f"{stem}-"), "detect")


def _catalogue_order(path: Path) -> tuple:
    """Families by version (RT-DETR last), each family's plain YAML first, then by scale letter (n, t, s, ... e)."""
    folder, stem = path.parent.name, path.stem
    version = int(re.sub(r"\D", "", folder) or 0)
    m = re.match(r"^yolov?\d+([ntsmblcxe])(?![a-z])", stem)
    return folder == "rt-detr", version, stem.count("-"), "ntsmblcxe".index(m.group(1)) if m else -1, stem


@functools.lru_cache(maxsize=1)
def catalogue() -> dict[str, FineModel]:
    """Every FINE YAML the installed ultralytics gives (fine name -> :class:`FineModel`): each of its model YAMLs
    with a top-down fusion stage that builds offline as a plain YAML model, in folder order with each family's plain
    YAML first (``yolov8.yaml`` before ``yolov8-p2.yaml``)."""
    import yaml
    from ultralytics.utils import ROOT

    root = Path(ROOT) / "cfg" / "models"
    out = {}
    paths = sorted(root.glob("*/*.yaml"), key=_catalogue_order)
    for path in paths:
        if _NEEDS_DOWNLOAD.search(path.stem):
            continue
        stages = top_down_stages(yaml.safe_load(path.read_text(encoding="utf-8")))
        if stages:
            rel = path.relative_to(root).as_posix()
            out[_fine_name(path)] = FineModel(rel, _family(path.parent.name), task_of(path.name), tuple(stages))
    return out


def upstream_text(name: str) -> str:
    """Text of the installed ultralytics YAML that catalogued FINE model ``name`` derives from."""
    from ultralytics.utils import ROOT

    return (Path(ROOT) / "cfg" / "models" / catalogue()[name].upstream).read_text(encoding="utf-8")


def scales(name: str) -> list[str]:
    """The model names a catalogued FINE YAML builds: ``yolov8-fine.yaml`` -> ``yolov8n-fine.yaml`` ...
    ``yolov8x-fine.yaml`` (its upstream ``scales:`` keys after the version number; ``yolov8-p2-fine.yaml`` ->
    ``yolov8n-p2-fine.yaml``, ...). A per-scale file (``yolov10s``, ``yolov9m``, ``rtdetr-l``) builds only itself."""
    return list(_scales(name))


@functools.cache  # the installed YAMLs do not change under a running process; parsing one: ~5 ms
def _scales(name: str) -> tuple[str, ...]:
    import yaml

    keys = list(yaml.safe_load(upstream_text(name)).get("scales") or {})
    if len(keys) <= 1:
        return (name,)
    prefix, rest = re.match(r"^(yolov?\d+)(.*)$", name).groups()
    return tuple(f"{prefix}{s}{rest}" for s in keys)


def _scale_pattern(names: list[str]) -> str | None:
    """``yolov8{n,s,m,l,x}-seg-fine.yaml``; ``rtdetr-resnet{50,101}-fine.yaml``: the common prefix and suffix
    around the differing middles; None when a middle is empty or holds a dash (not one name with other sizes)."""
    if len(names) == 1:
        return f"`{names[0]}`"
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[len(prefix):][::-1] for n in names])[::-1]
    middles = [n[len(prefix) : len(n) - len(suffix)] for n in names]
    if not all(middles) or any("-" in m for m in middles):
        return None
    return f"`{prefix}{{{','.join(middles)}}}{suffix}`"


def placement_table() -> str:
    """The docs' table of covered models: one row per upstream YAML (per-scale files of one family, task and
    placement merged: ``yolov9{t,s,m,c}``), the stages as ``row: low ← high`` in upstream indices, top stage first."""
    merged: dict[tuple, list[str]] = {}
    for name, m in catalogue().items():
        merged.setdefault((m.family, m.task, m.stages, len(scales(name)) == 1), []).append(name)
    out = []
    for (family, task, stages, per_scale), names in merged.items():
        groups = [names] if per_scale and _scale_pattern(names) else [[n] for n in names]
        for group in groups:
            model = _scale_pattern(group if len(group) > 1 else scales(group[0]))
            source = _scale_pattern([catalogue()[n].upstream for n in group])
            cells = " · ".join(f"{s.row}: {s.low} ← {s.high}" for s in stages)
            out.append([family, task, model, source, len(stages), cells])
    header = ["family", "task", "FINE YAML", "from ultralytics (`cfg/models/`)", "stages",
              "fusion rows (row: low ← high), top first: k = 1, 2, 4"]
    return markdown_table(header, out)


def not_covered_table() -> str:
    """The docs' table of what has no FINE YAML, and why."""
    return markdown_table(["not covered", "why"], [[k, v] for k, v in NOT_COVERED.items()])


# ------------------------------------------------------------------------------------------ fine-yolo yaml


def write_fine_yaml(model: str, out: str = "", overwrite: bool = False) -> tuple[Path, list[dict[str, Any]]]:
    """Write the FINE YAML of ``model`` (a path or a name ultralytics resolves) to ``out`` (default: beside a path,
    in the working directory for a bare name, as ``<stem>-fine.yaml``), build it and return (its path, one dict per
    FINE row: row, up, low, high, k, r, head_dim, channels, params)."""
    source = find_upstream(model)
    if source is None:
        raise UsageError(f"argument 'model={model}': no such model YAML (a path, or a name ultralytics knows)")
    stem = Path(model).stem
    target = Path(out) if out else (Path(model).parent if Path(model).parent != Path() else Path.cwd()) / \
        f"{stem}-fine{Path(model).suffix or '.yaml'}"
    if target.exists() and not overwrite:
        raise UsageError(f"{target} exists; pass overwrite=True to replace it")
    text = render_fine_yaml(source.read_text(encoding="utf-8"), _display(source), target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    from fine_yolo.nn.fusion import FINEConcat

    net = build(str(target)).model
    rows = [{"row": m.i, "up": m.f[0] % m.i, "low": m.fine_from[0], "high": m.fine_from[1], "k": m.fine.k,
             "r": m.fine.r, "head_dim": m.fine.head_dim, "channels": m.fine.c_low, "params": m.np}
            for m in net.model if isinstance(m, FINEConcat)]
    return target, rows


def _yaml_run(args: dict[str, Any], extra: dict[str, Any]) -> int:
    path, rows = write_fine_yaml(args["model"], args["out"], args["overwrite"])
    print(f"wrote {path}")
    print(markdown_table(["row", "FINEConcat(up, low), FINE reads", "k", "r", "head dim", "C", "params"],
                         [[r["row"], f"({r['up']}, {r['low']}), high = layer {r['high']}", r["k"], r["r"],
                           r["head_dim"], r["channels"], f"{r['params']:,}"] for r in rows]))
    print(f"train it with: yolo train model={path} data=...  (pretrained=<its baseline>.pt transfers bit-exact)")
    return 0


COMMAND = Command(
    options={
        "model": Option("", "the upstream model YAML: a path, or a name ultralytics knows (yolov8s-p2.yaml)",
                        required=True),
        "out": Option("", "where to write (default: <model stem>-fine.yaml beside a path, else here)"),
        "overwrite": Option(False, "replace an existing file"),
    },
    run=_yaml_run,
    example="fine-yolo yaml model=path/to/mine.yaml",
    positional="model",
)
