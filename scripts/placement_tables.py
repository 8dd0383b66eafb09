"""Print docs/models.md's tables: every FINE YAML the installed ultralytics gives, and what none covers.

    python scripts/placement_tables.py          # the placement table, then the not-covered table
    python scripts/placement_tables.py help

FINE YAMLs are not written ahead of time: ``fine_yolo.models.fine_yaml_path`` renders each from its ultralytics YAML
when it is first asked for by name (``fine-yolo yaml model=yolov8s-p2.yaml`` writes one to read or edit).
"""

import sys

from fine_yolo.models import not_covered_table, placement_table


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("help", "-h", "--help"):
        print(__doc__.strip())
        return 0
    if argv:
        print(f"placement_tables.py: unknown argument {argv[0]!r}\n\n{__doc__.strip()}", file=sys.stderr)
        return 2
    print(placement_table() + "\n\n" + not_covered_table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
