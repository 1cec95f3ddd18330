"""Tests on the one-node cluster (marker `node`): the node, the image, DNS, Aegis in pods."""
