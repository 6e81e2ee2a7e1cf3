"""Store: the Zarr v3 store a job writes, as documented in docs/store-format.md.

``location`` is the store as a value (its URL, filesystem and root), made once by the caller;
``write`` creates groups and arrays and marks images complete; ``read`` opens and checks them;
``verify`` proves every image whole; ``lease`` keeps one writer per store; ``ngff`` writes the
OME-NGFF label metadata and pyramid that viewers read.
"""
