"""Figures only (matplotlib), one module per experiment. Functions take computed tensors or
DataFrames and return a `matplotlib.figure.Figure`; they never run a model.

Figures are built with `Figure()` rather than pyplot, so no GUI backend or global figure state is
involved: the report renders them to PNG with Agg.
"""
