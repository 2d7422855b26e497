"""HTTP routes of the service, one module per resource; dependencies in :mod:`serving.api.deps`."""
