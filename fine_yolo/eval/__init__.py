"""COCO-style evaluation with pycocotools."""
