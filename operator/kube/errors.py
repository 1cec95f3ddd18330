"""One error tree for every Kubernetes API call, mapped once from the library's errors.

Callers catch what they can act on (``NotFound``: create it; ``Conflict``: read
again; ``Gone``: list again; ``Transient``: let the handler retry) and let the
rest of :class:`KubeError` propagate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx2
from lightkube import ApiError


class KubeError(Exception):
    """The API refused a request; ``status`` and ``reason`` as in its ``Status`` object
    (``status`` 0: no answer at all)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class Conflict(KubeError):
    """409: the object changed since it was read, or already exists."""


class Gone(KubeError):
    """410: a watch's resource version is too old; list again."""


class Forbidden(KubeError):
    """403: RBAC does not allow the request."""


class Invalid(KubeError):
    """422: the API server's validation (schema, CEL) refused the object."""


class Transient(KubeError):
    """429, 5xx or no answer (connection, timeout): the same request may succeed later."""


_BY_STATUS: dict[int, type[KubeError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
}


def error_for(status: int, reason: str, message: str) -> KubeError:
    """The member of the tree for an HTTP status."""
    if status == 429 or status >= 500 or status == 0:
        return Transient(status, reason, message)
    return _BY_STATUS.get(status, KubeError)(status, reason, message)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Raise the library's errors as :class:`KubeError` (the one place they are mapped)."""
    try:
        yield
    except ApiError as error:
        found = error.status
        status = found.code or (error.response.status_code if error.response else 0)
        raise error_for(status, found.reason or "", found.message or "") from error
    except httpx2.HTTPStatusError as error:  # an answer that is not a JSON Status
        text = error.response.text[:200]
        raise error_for(error.response.status_code, "", text) from error
    except httpx2.TransportError as error:
        raise Transient(0, "Unreachable", str(error) or type(error).__name__) from error
