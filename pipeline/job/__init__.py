"""Job: plan the work, build its dask graphs, run them on a cluster, say how it went.

``plan`` turns discovered inputs into work items without reading pixels; ``graph`` is the only
module that builds dask graphs; ``tasks`` holds the functions those graphs run on workers;
``run`` submits work, a bounded amount at a time, and records results; ``cluster`` and
``preload`` start or join the Dask cluster; ``stopping``, ``progress``, ``summary`` and
``metrics`` handle signals, the progress log, the summary table and the job's metrics, which
``jobview`` and ``dashboard`` show on the dashboard's ``/pipeline`` page.
"""
