"""Proof tests that the test bed's servers are the real thing."""
