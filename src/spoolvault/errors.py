"""The one exception tree of spoolvault, grouped by who must act.

    SpoolvaultError
    ├── ClientError ........................ the request was wrong (-> IPP status / HTTP 4xx)
    │   ├── settings.InvalidSetting ......... unknown setting, wrong type or range (400)
    │   ├── settings.SettingsConflict ....... encryption and archiving both on (409)
    │   ├── db.UnknownServer ................ no server of that name (404)
    │   ├── ipp.codec.IppParseError ......... a malformed IPP request (carries the IPP status)
    │   └── intake.lpd.LpdError ............. a malformed LPD command or control file
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
