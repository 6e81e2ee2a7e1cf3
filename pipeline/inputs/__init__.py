"""Inputs: find the images a job is given and open each lazily as a chunked array.

``discover`` lists files, globs, folders and URLs; ``names`` gives each image its node name in
the store; ``sources`` decodes and normalises an image (probe, decode, RGB/RGBA uint8);
``tiled`` reads tiled TIFF and Zarr inputs tile by tile.
"""
