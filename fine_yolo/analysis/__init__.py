"""Analyses: complexity (params, FLOPs with attention), paper-table reproductions."""
