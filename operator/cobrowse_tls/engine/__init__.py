"""The engine: everything that talks to the Kubernetes API (runner, handlers, reconcile steps)."""
