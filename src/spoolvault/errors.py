"""The one exception tree of spoolvault, grouped by who must act.

    SpoolvaultError
    ├── ClientError ........................ the request was wrong (-> IPP status / HTTP 4xx)
    │   ├── settings.InvalidSetting ......... unknown setting, wrong type or range (400)
    │   ├── settings.SettingsConflict ....... encryption and archiving both on (409)
    │   ├── db.UnknownServer ................ no server of that name (404)
    │   ├── AuthenticationFailed ............ unknown user, card or device, or a wrong secret:
    │   │                                     one message for all, no user enumeration (401)
    │   ├── LockedOut ....................... too many failures on this account or station;
    │   │                                     carries retry_after seconds (429 + Retry-After)
    │   ├── identity.InvalidIdentity ........ a malformed user, card, PIN, group (422)
    │   ├── identity.csvimport.ImportFailed . a user CSV with bad lines, each named (nothing kept)
    │   ├── ipp.codec.IppParseError ......... a malformed IPP request (carries the IPP status)
    │   └── intake.lpd.LpdError ............. a malformed LPD command or control file
    ├── db.CommitUnknown ................... a job record's COMMIT failed and the database
    │                                         cannot tell whether it landed: the file is kept
    │                                         (-> server-error-temporary-error, raw reset)
    ├── OperatorError ...................... the installation is wrong (-> startup or CLI message)
    │   ├── ConfigError ..................... print-provider.conf or a flag is unusable
    │   └── KeyStoreError ................... the key file is missing, unreadable or inconsistent
    └── SpoolError ......................... a spool file cannot be written or read
        ├── SpoolWriteError ................. disk full, directory gone: nothing was kept
        ├── SpoolFileMissing ................ no file of that name
        ├── UnsupportedSpoolFormat .......... a format version this build does not read
        └── SpoolDecryptError ............... opaque: wrong/missing/retired key, tampering,
                                              truncation, reordering (details only in the log)

`SpoolDecryptError` deliberately carries one message whatever went wrong, like
`cryptography.fernet.InvalidToken`: an attacker who can hand us files learns nothing
from the answer. The reason is logged by the code that raises it.
"""

from __future__ import annotations


class SpoolvaultError(Exception):
    """Base of every error spoolvault raises on purpose."""


class ClientError(SpoolvaultError):
    """The client's request is at fault; it maps to an IPP status or an HTTP 4xx."""


class AuthenticationFailed(ClientError):
    """Credentials were refused. One message whatever was wrong: no user enumeration."""

    MESSAGE = "authentication failed: unknown user or card, or wrong password or PIN"

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class LockedOut(ClientError):
    """Too many failed logins for an account or at a station; try again in ``retry_after`` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed logins: try again in {retry_after} seconds"
            if retry_after > 1
            else "too many failed logins: try again in a second"
        )
        self.retry_after = retry_after


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
