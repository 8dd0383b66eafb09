"""Write cfg/models/*-fine.yaml from the installed ultralytics YAMLs (see fine_yolo.models.FINE_MODELS)."""

from pathlib import Path

from fine_yolo.models import FINE_MODELS, render_fine_yaml, upstream_text

out = Path(__file__).resolve().parents[1] / "cfg" / "models"
out.mkdir(parents=True, exist_ok=True)
for name in FINE_MODELS:
    (out / name).write_text(render_fine_yaml(name, upstream_text(name)), encoding="utf-8")
    print(f"wrote {out / name}")
