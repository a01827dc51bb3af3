"""Kubernetes: kubeconfigs for tokens, and webhook token authentication for API servers."""
