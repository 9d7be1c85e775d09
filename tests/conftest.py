# Shared pytest plugins. envtest: the real kube-apiserver fixture (tests/envtest/plugin.py).
pytest_plugins = ["envtest.plugin"]
