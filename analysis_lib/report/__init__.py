"""Turning results into the book: executing the analysis notebooks, offline charts, the build
profile, the Sphinx glue, and the live explorer for Jupyter."""
