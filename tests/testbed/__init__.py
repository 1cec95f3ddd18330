"""Proof tests that the test bed's servers are the real thing (issue 2, section 5)."""
