"""A real one-node Kubernetes cluster on this machine, for tests and for people.

The parts kind runs inside its node container, assembled here without a container
engine or a registry: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
kubelet and kube-proxy (built by :mod:`tests.controlplane.build`), containerd and runc
and the CNI plugins from Debian, CoreDNS as a Deployment. Images are built with buildah
from a base made with mmdebstrap and imported into containerd.

* :mod:`.layout`     names, paths and addresses of one cluster
* :mod:`.hostnet`    its network namespace, the veth to the host, routes, sysctls
* :mod:`.holder`     the process that holds its PID and mount namespaces
* :mod:`.certs`      its PKI and kubeconfigs
* :mod:`.configs`    containerd, CNI, kubelet and kube-proxy configuration files
* :mod:`.components` how each server is started and when it counts as up
* :mod:`.addons`     CoreDNS
* :mod:`.images`     the base, Aegis, pause, CoreDNS and PostgreSQL images: names, keys
* :mod:`.image_build` building them (mmdebstrap, buildah, gcc) into cached OCI archives
* :mod:`.postgres_image` the ledger's PostgreSQL image (Debian's, the official entrypoint)
* :mod:`.cluster`    bring-up, health, reuse, state file
* :mod:`.cleanup`    teardown (also of a stale cluster) and the leak check

``python -m tests.cluster up|down|status|check`` is what ``make cluster`` and
``make cluster-down`` run. Everything needs root. This file imports nothing.
"""
