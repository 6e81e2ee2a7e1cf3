"""The ``/pipeline`` page on the scheduler's dashboard port, beside Dask's ``/status``.

:func:`serve` adds two routes to a scheduler's HTTP server (the one distributed serves its
dashboard and ``/metrics`` from): ``/pipeline``, a self-contained page (``dashboard.html``
beside this module: inline styles, script and SVG charts, nothing fetched from elsewhere, so it
works offline), and ``/pipeline/data.json``, the jobs the scheduler's
:class:`~pipeline.job.metrics_plugin.JobMetrics` keeps, which the page asks for every second.
Both answer under any dashboard prefix (``dask scheduler --dashboard-prefix``). Where the
dashboard is drawn by bokeh, its top bar gets a "Pipeline" link too.

Any request the routes do not expect gets an HTTP error (405 for a method, 404 for a path)
and nothing in the scheduler's log; a query string is ignored.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from functools import cache
from importlib.resources import files
from typing import Any

from tornado import web

logger = logging.getLogger(__name__)

#: Name of the page, in its path and in the dashboard's top bar.
PAGE = "pipeline"

#: The HTTP applications already serving the page (one per scheduler of this process).
_served: weakref.WeakSet[Any] = weakref.WeakSet()


def serve(scheduler: Any, plugin: str) -> None:
    """Serve the page and its data on ``scheduler``'s dashboard port (once per scheduler).

    The data are the ``views()`` of the scheduler's plugin named ``plugin``
    (:class:`~pipeline.job.metrics_plugin.JobMetrics`), looked up at each request: none while
    it is not registered. Does nothing for a scheduler with no HTTP server.
    """
    application = getattr(scheduler, "http_application", None)
    if application is None or application in _served:
        return
    routes: list[Any] = [
        (rf".*/{PAGE}/?", Page),
        (rf".*/{PAGE}/data\.json", Data, {"scheduler": scheduler, "plugin": plugin}),
    ]
    application.add_handlers(r".*", routes)
    _served.add(application)
    _link_from_dashboard(scheduler)


def _link_from_dashboard(scheduler: Any) -> None:
    """Add the page to the top bar of the scheduler's bokeh pages, where distributed has one.

    The bar lists distributed's ``template_variables(scheduler)["pages"]``, which every page
    drawn afterwards reads; without bokeh (or with a distributed that lays it out otherwise)
    the page is only reached by its address.
    """
    try:
        from distributed.dashboard.scheduler import template_variables

        pages = template_variables(scheduler)["pages"]
        if PAGE not in pages:
            pages.append(PAGE)
    except Exception as exc:
        logger.debug("no link to /%s on the dashboard's top bar: %s", PAGE, exc)


@cache
def page_html() -> bytes:
    """The page (the same for every scheduler: it asks for its data)."""
    return files("pipeline.job").joinpath("dashboard.html").read_bytes()


def data(scheduler: Any, plugin: str) -> dict[str, Any]:
    """What ``/pipeline/data.json`` answers: the scheduler's time and its jobs, latest first."""
    registered = scheduler.plugins.get(plugin)
    jobs = registered.views() if registered is not None else []
    return {"now": time.time(), "jobs": jobs}


class _Quiet(web.RequestHandler):
    """A handler whose answers are never cached, and whose errors are one line of text."""

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")


class Page(_Quiet):
    """``GET``/``HEAD /pipeline``: the page."""

    def get(self) -> None:
        """Answer with the page."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page_html())

    head = get


class Data(_Quiet):
    """``GET``/``HEAD /pipeline/data.json``: the jobs, as :func:`data` gives them."""

    def initialize(self, scheduler: Any, plugin: str) -> None:
        """Answer for ``scheduler`` (tornado calls this with the route's arguments)."""
        self.scheduler = scheduler
        self.plugin = plugin

    def get(self) -> None:
        """Answer with the jobs as JSON (a 500 and one line if they cannot be written)."""
        try:
            body = json.dumps(
                data(self.scheduler, self.plugin), allow_nan=False, separators=(",", ":")
            )
        except Exception as exc:  # a message the page cannot show: say so, not in the log
            logger.debug("/%s/data.json: %s", PAGE, exc)
            self.send_error(500)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    head = get
