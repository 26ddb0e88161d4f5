"""The `gateway` console script."""
