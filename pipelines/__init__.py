"""HOW vendor ticks become clean Parquet, bars, features and labels (Polars/PyArrow; no torch)."""
