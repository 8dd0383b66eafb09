"""Datasets: the embedded synthetic set and the VisDrone converter."""
