"""A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok fake nodes) for the end-to-end tests and the local demo.

No container engine: every component is a plain process on 127.0.0.1, started from binaries
that ``hack/build-binaries.sh`` builds once and caches outside the repository.
"""

from cobrowse_tls.devcluster.cluster import ClusterError, LocalCluster, default_dir

__all__ = ["ClusterError", "LocalCluster", "default_dir"]
