"""Exceptions raised by gust, named as in ``modal.exception``.

Every error the server reports carries a kind (``invalid``, ``not_found`` ...); ``from_api``
maps it to one of these classes. The filesystem errors also derive from the matching
built-in ``OSError`` subclass, so ``except FileNotFoundError`` works too.
"""

from __future__ import annotations

import builtins
from typing import Optional


class Error(Exception):
    """Base class for all gust errors."""

    _kind: Optional[str] = None
    _http_status: Optional[int] = None


class RemoteError(Error):
    """The gust server (or a worker behind it) failed."""


class ServiceError(RemoteError):
    """The server cannot serve the request now (HTTP 503), e.g. no worker is connected."""


class InternalError(RemoteError):
    """The server hit an unexpected error (HTTP 500)."""


class ImageBuildError(RemoteError):
    """An image build failed."""

    def __init__(self, message: str, image_id: Optional[str] = None):
        super().__init__(message)
        self.image_id = image_id


class InvalidError(Error):
    """The request was invalid: a bad argument or option."""


class ConflictError(InvalidError):
    """The request conflicts with the current state, e.g. a name already taken."""


class AlreadyExistsError(ConflictError):
    """An object with that name already exists."""


class RequestSizeError(InvalidError):
    """A request or the data it asks for is too large (HTTP 413)."""


class ResourceExhaustedError(Error):
    """A bounded resource is full for now, e.g. a Queue partition (``Queue.put`` raises ``queue.Full``)."""


class NotFoundError(Error):
    """The requested object does not exist."""


class AuthError(Error):
    """The token is missing or wrong."""


class PermissionDeniedError(Error):
    """The token is valid but may not do this: its role (e.g. read-only), or a function
    container's credential, does not allow the call (HTTP 403, kind ``forbidden``)."""


class ResourceExhaustedError(Error):
    """A quota or rate limit is reached: the workspace's concurrent sandboxes, CPU, memory,
    GPUs or image disk (kind ``quota_exceeded``, HTTP 403; the message names the quota and its
    value), or its request rate (kind ``rate_limited``, HTTP 429: retry later)."""


class ConnectionError(Error):
    """The gust server could not be reached."""


class ExecutionError(Error):
    """Something unexpected happened while running."""


class TimeoutError(Error):
    """Base class for timeouts."""


class _NoOutputYetError(TimeoutError, builtins.TimeoutError):
    """``FunctionCall.get(timeout=...)`` found no output in time. Modal raises Python's own
    ``TimeoutError`` there (its job-queue example catches it so), so this is both that and
    gust's ``TimeoutError``."""


class SandboxTimeoutError(TimeoutError):
    """The sandbox ran past its timeout (or idle timeout) and was stopped."""


class ExecTimeoutError(TimeoutError):
    """A process started with exec ran past its timeout."""


class SandboxTerminatedError(Error):
    """The sandbox was terminated, or has otherwise stopped running."""


class FilesystemExecutionError(Error):
    """A file operation in a sandbox failed for an unexpected reason."""


class SerializationError(Error):
    """An argument or result could not be serialised (pickled) to send it."""


class DeserializationError(Error):
    """A payload from the other side could not be deserialised."""


class FunctionTimeoutError(TimeoutError):
    """A function input ran past its ``timeout``."""


class InputCancellation(Error):
    """The input was cancelled (``FunctionCall.cancel()``, or its app stopped)."""


class OutputExpiredError(TimeoutError):
    """The output of a function call is no longer available."""


class SandboxFilesystemError(Error):
    """Base class for ``Sandbox.filesystem`` errors."""


class SandboxFilesystemNotFoundError(SandboxFilesystemError, NotFoundError, builtins.FileNotFoundError):
    """A file or directory does not exist in the sandbox."""


class SandboxFilesystemIsADirectoryError(SandboxFilesystemError, builtins.IsADirectoryError):
    """The path is a directory, where a file was expected."""


class SandboxFilesystemNotADirectoryError(SandboxFilesystemError, builtins.NotADirectoryError):
    """A path component is not a directory."""


class SandboxFilesystemPathAlreadyExistsError(SandboxFilesystemError, builtins.FileExistsError):
    """The path already exists."""


class SandboxFilesystemDirectoryNotEmptyError(SandboxFilesystemError, builtins.OSError):
    """The directory is not empty (pass ``recursive=True``)."""


class SandboxFilesystemPermissionError(SandboxFilesystemError, builtins.PermissionError):
    """Permission denied in the sandbox."""


class SandboxFilesystemFileTooLargeError(SandboxFilesystemError):
    """The file is too large to read in one request."""


_BY_KIND = {
    "invalid": InvalidError,
    "unauthorized": AuthError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "too_large": RequestSizeError,
    "unavailable": ServiceError,
    "resource_exhausted": ResourceExhaustedError,
    "internal": InternalError,
    "forbidden": PermissionDeniedError,
    "quota_exceeded": ResourceExhaustedError,
    "rate_limited": ResourceExhaustedError,
}

_BY_STATUS = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}


def from_api(kind: Optional[str], message: str, status: Optional[int] = None) -> Error:
    """Return the exception for an API error of ``kind`` (or, lacking one, HTTP ``status``)."""
    if not kind and status is not None:
        kind = _BY_STATUS.get(status, "internal" if status >= 500 else "invalid")
    cls = _BY_KIND.get(kind or "", RemoteError)
    exc = cls(message)
    exc._kind = kind
    exc._http_status = status
    return exc
