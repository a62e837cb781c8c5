"""Analyses of datasets and predictions (figures and tables)."""
