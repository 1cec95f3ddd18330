"""The test bed's real servers: PostgreSQL, etcd + kube-apiserver, and the tools around them.

* :mod:`.build` builds kube-apiserver, kubectl, etcd and helm at pinned versions
  (:mod:`.versions`) into a cache outside the repo.
* :mod:`.tools` says which Go modules, binaries, version probes and link flags.
* :mod:`.apiserver` runs etcd + kube-apiserver with a throwaway PKI (:mod:`.pki`).
* :mod:`.kube` is the handle tests get (kubectl, helm, webhook CA).
* :mod:`.postgres` runs a throwaway PostgreSQL server.

Tests normally use these through the fixtures in ``tests/conftest.py`` and import
types and helpers from the submodules (``from tests.controlplane.kube import Kube``).
This file imports nothing, so ``python -m tests.controlplane.build`` stays light.
"""
