"""Outputs: what is made from a store, read through :mod:`pipeline.store`.

``rebuild`` gives an image back as ``palette[labels]``, lazily; ``files`` writes image files
(PNG, TIFF, Zarr, ...); ``png`` writes indexed PNGs; ``report`` writes the HTML report.
"""
