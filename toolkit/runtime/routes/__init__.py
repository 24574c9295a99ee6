"""The door's HTTP API, one ``APIRouter`` per resource; :func:`toolkit.runtime.server.create_app` includes them.

- ``inference``: ``/predict`` and KServe v2 (model metadata, readiness, infer).
- ``door``: the door's state, timeline, live view and manual unlock.
- ``review``: the snapshots, one image each, and relabelling.
- ``health``: server metadata, liveness, readiness and Prometheus metrics.

Routes reach the door's objects through :func:`~toolkit.runtime.routes.context.context`, a dependency that
reads the :class:`~toolkit.runtime.routes.context.AppContext` ``create_app`` left on ``app.state``.
"""
