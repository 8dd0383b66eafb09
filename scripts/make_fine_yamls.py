"""Write cfg/models/*-fine.yaml from the installed ultralytics YAMLs (see fine_yolo.models.FINE_MODELS).

    python scripts/make_fine_yamls.py          # (re)write every shipped FINE YAML
    python scripts/make_fine_yamls.py table    # print the README's placement and not-shipped tables
    python scripts/make_fine_yamls.py help
"""

import sys
from pathlib import Path

from fine_yolo.models import FINE_MODELS, not_shipped_table, placement_table, render_fine_yaml, upstream_text


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("help", "-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv == ["table"]:
        print(placement_table() + "\n\n" + not_shipped_table())
        return 0
    if argv:
        print(f"make_fine_yamls.py: unknown argument {argv[0]!r}\n\n{__doc__.strip()}", file=sys.stderr)
        return 2
    out = Path(__file__).resolve().parents[1] / "cfg" / "models"
    out.mkdir(parents=True, exist_ok=True)
    for name in FINE_MODELS:
        (out / name).write_text(render_fine_yaml(name, upstream_text(name)), encoding="utf-8")
        print(f"wrote {out / name}")
    stale = sorted(p.name for p in out.glob("*-fine.yaml") if p.name not in FINE_MODELS)
    if stale:
        print(f"not in FINE_MODELS (delete by hand if they should go): {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
