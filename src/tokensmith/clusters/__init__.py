"""Kubernetes clusters and VPCs: the resources tokens grant access to."""
