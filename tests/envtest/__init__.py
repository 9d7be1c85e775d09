"""Real-API-server test support (etcd + kube-apiserver from $KUBEBUILDER_ASSETS). See cluster.py."""
