"""kpilot's Kopf operator: applies a trained policy's concurrency targets to Knative revisions."""
