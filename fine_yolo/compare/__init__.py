"""``fine-yolo compare``: paired, seed-controlled FINE-vs-baseline trainings and their honest summary.

``plan`` (the runs and their commands), ``runner`` (trains them, resumably), ``evaluate`` (pycocotools AP and error
counts of each best.pt), ``stats`` (paired differences, t-intervals, verdicts), ``report`` (compare.json/md),
``plots`` (PNGs), ``command`` (the ``COMMAND``).
"""
