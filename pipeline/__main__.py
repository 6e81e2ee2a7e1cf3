"""``python -m pipeline``: see :mod:`pipeline.cli`."""

import gc
import sys

from pipeline.cli import main
from pipeline.job.garbage import freeze_after_pauses

freeze_after_pauses()  # the libraries' objects, imported with collection paused
status = main()
# Everything is written and closed. Left to itself, the interpreter's last garbage collections
# walk every object that scikit-learn, dask and numba created (0.7 s of a 3 s job); frozen
# objects are skipped. Exit handlers still run.
gc.freeze()
sys.exit(status)
