"""Tests of the sidecar injector: pure decisions, certificates, the webhook on a real API."""
