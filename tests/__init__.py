"""Aegis test suite.

A package (not loose files) so that test infrastructure is importable as
``tests.controlplane`` from the repository root, by conftest and by
``python -m tests.controlplane.build``.
"""
