"""kpilot: learn Knative autoscaling targets from real request traces."""

__version__ = "0.1.0"
