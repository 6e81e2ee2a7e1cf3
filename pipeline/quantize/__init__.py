"""Quantize: the colour maths, as numpy and numba kernels on in-memory arrays.

Sample pixels, fit a palette (dask-ml's KMeans on the sample, then refined over every colour),
assign every pixel its nearest palette entry (optionally dithered), measure the result. Nothing
here reads or writes files or builds a dask graph (:mod:`pipeline.job.graph` does that), and
nothing imports the other subpackages: each kernel is tested against a numpy oracle.
"""
