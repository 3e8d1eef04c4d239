"""The one exception tree of spoolvault, grouped by who must act.

Every error spoolvault raises on purpose derives from `SpoolvaultError` and carries two
class attributes, `http_status` and `ipp_status`: the REST API, the web pages and the IPP
server answer from them instead of keeping lists of classes of their own. A class that
lives in another module is named here with its module.

    SpoolvaultError ............................. (500, server-error-internal-error)
    ├── Refused ................................. the request was not done; the answer says why
    │   ├── ClientError ......................... the request was wrong (400, bad-request)
    │   │   ├── NotFound ........................ no such thing, or not the caller's (404)
    │   │   │   ├── jobs.errors.JobNotFound
    │   │   │   │   └── stations.access.NotYourJob  not theirs, nor delegated to them (404)
    │   │   │   ├── printers.registry.PrinterNotFound
    │   │   │   ├── identity.users.UserNotFound
    │   │   │   ├── identity.devices.DeviceNotFound
    │   │   │   ├── servers.registry.UnknownProvider
    │   │   │   ├── db.UnknownServer
    │   │   │   ├── archive.NotArchived
    │   │   │   └── archive.NoPreview
    │   │   ├── Conflict ........................ not possible in its state (409, not-possible)
    │   │   │   ├── jobs.errors.JobNotPossible
    │   │   │   ├── jobs.release.ReleaseRefused
    │   │   │   ├── jobs.release.PrinterBlocked .. the printer is in error and blocks release
    │   │   │   ├── documents.convert.NoConversion  the printer's formats cannot be reached
    │   │   │   ├── settings.SettingsConflict .... encryption and archiving both on
    │   │   │   ├── printers.registry.PrinterExists, PrinterInUse
    │   │   │   ├── identity.users.IdentityConflict
    │   │   │   ├── identity.devices.DeviceExists
    │   │   │   ├── servers.registry.ProviderExists
    │   │   │   └── db.UserExists
    │   │   ├── Invalid ......................... a malformed value (422, bad-request)
    │   │   │   ├── settings.InvalidSetting ...... unknown setting, wrong type or range
    │   │   │   ├── printers.registry.InvalidPrinter
    │   │   │   └── identity.users.InvalidIdentity a malformed user, card, PIN, group
    │   │   ├── AuthenticationFailed ............ unknown user, card or device, or a wrong secret:
    │   │   │                                     one message for all, no user enumeration (401)
    │   │   ├── LockedOut ....................... too many failures on this account or station;
    │   │   │                                     carries retry_after seconds (429 + Retry-After)
    │   │   ├── jobs.release.JobPinLocked ....... too many wrong PINs for one job (429)
    │   │   ├── jobs.release.JobPinRequired ..... a PIN job released without its PIN (403)
    │   │   ├── jobs.errors.JobTooLarge ......... over the size limit (413, entity-too-large)
    │   │   ├── identity.csvimport.ImportFailed . a user CSV with bad lines (nothing kept)
    │   │   ├── ipp.codec.IppParseError ......... a malformed IPP request (carries its IPP status)
    │   │   └── intake.lpd.LpdError ............. a malformed LPD command or control file
    │   └── Unavailable ......................... something we depend on is down; not the client's
    │       │                                     fault, try again later (503, service-unavailable)
    │       ├── DirectoryUnavailable ............ the LDAP/AD directory cannot be reached: a
    │       │                                     directory user's login is refused (503)
    │       └── servers.remote.ProviderUnavailable the job's print provider cannot be reached
    ├── intake.ipp.IppError ..................... answer an IPP request with this status (its own)
    ├── TemporaryFailure ........................ could not be kept now, try again
    │   │                                         (503, server-error-temporary-error)
    │   └── db.CommitUnknown .................... a job record's COMMIT failed and the database
    │                                             cannot tell whether it landed: the file is kept
    ├── PrinterFailure .......................... a printer did not take a job (502, device-error)
    │   ├── jobs.release.ReleaseFailed .......... the job is kept with the reason
    │   ├── documents.convert.ConversionFailed .. a converter crashed, failed or stalled
    │   ├── printers.delivery.DeliveryError ..... what the delivery client saw
    │   │   ├── printers.delivery.DeliveryFailed  nothing printed, safe to retry
    │   │   └── printers.delivery.DeliveryUncertain the printer may have it: never resent
    │   └── printers.http.BadAnswer ............. a printer's HTTP answer is malformed, too
    │                                             long or cut short (turned into a delivery
    │                                             outcome or a health verdict inside printers)
    ├── audit.AuditError ........................ an event could not be recorded (logged)
    ├── OperatorError ........................... the installation is wrong (startup or CLI message)
    │   ├── ConfigError ......................... print-provider.conf or a flag is unusable
    │   │   └── audit.AuditBusy ................. another process writes this audit log
    │   ├── KeyStoreError ....................... the key file is missing, unreadable, inconsistent
    │   └── identity.ldap.LdapSyncError ......... the directory refused or failed a sync
    └── SpoolError .............................. a spool file cannot be written or read
        ├── SpoolWriteError ..................... disk full, directory gone: nothing was kept
        │                                         (server-error-temporary-error)
        ├── SpoolFileMissing .................... no file of that name
        ├── UnsupportedSpoolFormat .............. a format version this build does not read
        └── SpoolDecryptError ................... opaque: wrong/missing/retired key, tampering,
                                                  truncation, reordering (details only in the log)

`SpoolDecryptError` deliberately carries one message whatever went wrong, like
`cryptography.fernet.InvalidToken`: an attacker who can hand us files learns nothing
from the answer. The reason is logged by the code that raises it.

Private control-flow exceptions that never leave their module (a lost connection inside
the delivery client, say) may derive from `Exception`; `tests/test_layout.py` checks that
every public one is a `SpoolvaultError` and is named above.
"""

from __future__ import annotations

from spoolvault.ipp.constants import Status


class SpoolvaultError(Exception):
    """Base of every error spoolvault raises on purpose."""

    http_status: int = 500
    ipp_status: int = Status.SERVER_ERROR_INTERNAL_ERROR

    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers for this error (Retry-After, say)."""
        return {}


class Refused(SpoolvaultError):
    """The request was not carried out; the message says why. Front ends show it as-is."""

    http_status: int = 400
    ipp_status: int = Status.CLIENT_ERROR_BAD_REQUEST


class ClientError(Refused):
    """The client's request is at fault; it maps to an IPP status or an HTTP 4xx."""


class NotFound(ClientError):
    """No such object, or not one the caller may see."""

    http_status: int = 404
    ipp_status: int = Status.CLIENT_ERROR_NOT_FOUND


class Conflict(ClientError):
    """Not possible in the object's current state."""

    http_status: int = 409
    ipp_status: int = Status.CLIENT_ERROR_NOT_POSSIBLE


class Invalid(ClientError):
    """A malformed or out-of-range value."""

    http_status: int = 422


class Unavailable(Refused):
    """Something the request needs is down; not the client's fault. Try again later."""

    http_status: int = 503
    ipp_status: int = Status.SERVER_ERROR_SERVICE_UNAVAILABLE


class DirectoryUnavailable(Unavailable):
    """The directory that checks an LDAP user's password cannot be reached (no fall-back)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("directory unavailable" + (f": {detail}" if detail else ""))


class TemporaryFailure(SpoolvaultError):
    """The request could not be kept now; the client may send it again."""

    http_status: int = 503
    ipp_status: int = Status.SERVER_ERROR_TEMPORARY_ERROR


class PrinterFailure(SpoolvaultError):
    """A printer did not take a job."""

    http_status: int = 502
    ipp_status: int = Status.SERVER_ERROR_DEVICE_ERROR


class AuthenticationFailed(ClientError):
    """Credentials were refused. One message whatever was wrong: no user enumeration."""

    MESSAGE = "authentication failed: unknown user or card, or wrong password or PIN"
    http_status: int = 401
    ipp_status: int = Status.CLIENT_ERROR_NOT_AUTHENTICATED

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class LockedOut(ClientError):
    """Too many failed logins for an account or at a station; try again in ``retry_after`` s."""

    http_status: int = 429
    ipp_status: int = Status.CLIENT_ERROR_NOT_AUTHENTICATED

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed logins: try again in {retry_after} seconds"
            if retry_after > 1
            else "too many failed logins: try again in a second"
        )
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class OperatorError(SpoolvaultError):
    """The installation is at fault; the operator must act. Shown as-is, without a traceback."""


class ConfigError(OperatorError):
    """print-provider.conf, a command-line flag or a directory it names is unusable."""


class KeyStoreError(OperatorError):
    """The key file cannot be read, written or is inconsistent."""


class SpoolError(SpoolvaultError):
    """A spool file could not be written or read."""


class SpoolWriteError(SpoolError):
    """Writing a spool file failed (disk full, directory unusable); nothing was kept."""

    http_status: int = 503
    ipp_status: int = Status.SERVER_ERROR_TEMPORARY_ERROR


class SpoolFileMissing(SpoolError):
    """The spool file named by a job does not exist."""


class UnsupportedSpoolFormat(SpoolError):
    """The file is a spool file of a format version this build cannot read."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"spool file format version {version} is not supported by this spoolvault "
            f"(it reads version 1); upgrade spoolvault to release this job"
        )
        self.version = version


class SpoolDecryptError(SpoolError):
    """The one opaque error for every failure to authenticate or decrypt a spool file."""

    MESSAGE = "spool file cannot be decrypted or failed authentication"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
