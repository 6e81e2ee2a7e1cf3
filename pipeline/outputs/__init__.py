"""Outputs: what is made from a store, reading its images through :mod:`pipeline.store`.

``files`` writes rebuilt images (PNG, GIF, WebP from the palette and labels exactly; TIFF and
Zarr chunk by chunk; anything imageio writes); ``png`` writes indexed PNGs; ``report`` writes
the self-contained HTML report. The lazy rebuild they start from is
:func:`pipeline.job.graph.rebuild`.
"""
