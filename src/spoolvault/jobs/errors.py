"""The errors of the job service (every front end answers them: 404, 409, 413)."""

from __future__ import annotations

from spoolvault.errors import ClientError, Conflict, NotFound
from spoolvault.ipp.constants import Status


class JobNotFound(NotFound):
    """No job with that id (on this queue)."""


class JobNotPossible(Conflict):
    """The job is in a state where the operation makes no sense (e.g. already printed)."""


class JobTooLarge(ClientError):
    """The document is larger than the server's MaxJobSize."""

    http_status: int = 413
    ipp_status: int = Status.CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE
