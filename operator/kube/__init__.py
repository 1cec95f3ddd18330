"""The operator's one way to talk to Kubernetes: client, errors, events, conditions."""
