"""The operator: kopf handlers, desired-state builders, status and gate policies, and API access.

Entry point: :func:`tradewarden.controller.main.run_operator`, started by ``tradewarden operator``.
Layout (STYLE.md): :mod:`.handlers` is thin and triggers the reconcilers; :mod:`.builders`,
:mod:`.status`, :mod:`.gate`, :mod:`.switches`, :mod:`.diffs` and :mod:`.leases` are pure;
:mod:`.kube` is the one module that talks to the API server; :mod:`.cache` reads kopf's indices.
This package never imports ``tradewarden.exchange``, ``tradewarden.runner`` or ccxt (import-linter).
"""
