"""Per-server settings, declared once.

``SETTINGS`` is the one table (like datasette's): it drives validation here, the admin
interface and REST API (``PATCH /api/v1/servers/{name}/settings``), ``spoolvault settings``
and the documentation, and a test checks every setting has help text. Each primary and
site server has its own values; the database stores only values that were set, so a
setting added in a later release takes its default on every existing server.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spoolvault.errors import Conflict, Invalid

log = logging.getLogger(__name__)

SettingType = builtins.type[bool] | builtins.type[int] | builtins.type[str]


class InvalidSetting(Invalid):
    """An unknown setting name or a value of the wrong type or range (HTTP 400/422)."""


class SettingsConflict(Conflict):
    """The change would enable settings that exclude each other (HTTP 409)."""


@dataclass(frozen=True)
class Setting:
    """One server setting: its name, value type, default and help text (shown to admins)."""

    name: str
    type: SettingType
    default: bool | int | str
    help: str
    min: int | None = None
    max: int | None = None
    label: str = ""

    def check(self, value: object) -> bool | int | str:
        """Return ``value`` if it is a valid value of this setting, else raise InvalidSetting."""
        # type() rather than isinstance(): True is an int to Python, but a switch set to 1
        # or a timeout set to true is a client mistake we report, not guess at.
        if self.type is bool:
            if type(value) is not bool:
                raise InvalidSetting(f"{self.name} must be true or false, not {_show(value)}")
            return value
        if self.type is int:
            if type(value) is not int:
                raise InvalidSetting(f"{self.name} must be an integer, not {_show(value)}")
            if self.min is not None and value < self.min:
                raise InvalidSetting(f"{self.name} must be at least {self.min}, not {value}")
            if self.max is not None and value > self.max:
                raise InvalidSetting(f"{self.name} must be at most {self.max}, not {value}")
            return value
        if type(value) is not str:
            raise InvalidSetting(f"{self.name} must be a string, not {_show(value)}")
        return value

    def parse(self, text: str) -> bool | int | str:
        """Parse a command-line value (``true``/``off``/``240``) and check it."""
        word = text.strip().lower()
        value: object = text
        if self.type is bool:
            if word in _TRUE:
                value = True
            elif word in _FALSE:
                value = False
            else:
                raise InvalidSetting(f"{self.name} must be true or false, not {text!r}")
        elif self.type is int:
            try:
                value = int(word, 10)
            except ValueError:
                raise InvalidSetting(f"{self.name} must be an integer, not {text!r}") from None
        return self.check(value)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

SPOOL_FILE_ENCRYPTION = "spool_file_encryption"
PRINT_ARCHIVING = "print_archiving"
IPP_AUTHENTICATION_REQUIRED = "ipp_authentication_required"
HOLD_TIMEOUT_MINUTES = "hold_timeout_minutes"
ARCHIVE_RETENTION_DAYS = "archive_retention_days"
PRINT_ARCHIVE_VIEWERS = "print_archive_viewers"
HIDE_DOCUMENT_NAMES = "hide_document_names"
REDACT_DOCUMENT_NAMES_AFTER_DAYS = "redact_document_names_after_days"
HIDDEN_TITLE = "(hidden)"
SMTP_HOST = "smtp_host"
SMTP_PORT = "smtp_port"
SMTP_FROM = "smtp_from"
EXPIRY_REMINDER_MINUTES = "expiry_reminder_minutes"
PUBLIC_URL = "public_url"
RELEASE_STATION_IDLE_SECONDS = "release_station_idle_seconds"
FAST_RELEASE_REQUIRE_PIN = "fast_release_require_pin"
RELEASE_STATION_CARD_PIN = "release_station_card_pin"
CONVERSION_MEMORY_MB = "conversion_memory_mb"
CONVERSION_TIMEOUT_SECONDS = "conversion_timeout_seconds"
MONITORING_PUBLIC = "monitoring_public"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        SPOOL_FILE_ENCRYPTION,
        bool,
        True,
        "Encrypt held jobs' spool files at rest (in EncryptedSpoolDir), so nobody with "
        "access to the disks, backups or a stolen drive can read waiting documents. "
        "Cannot be on together with Print Archiving.",
        label="Enable Spool File Encryption",
    ),
    Setting(
        PRINT_ARCHIVING,
        bool,
        False,
        "Keep a readable copy of every printed document for approved administrators to "
        "browse. Needs unencrypted spool files, so it cannot be on together with Spool "
        "File Encryption.",
        label="Enable Print Archiving",
    ),
    Setting(
        ARCHIVE_RETENTION_DAYS,
        int,
        30,
        "Days an archived document is kept before the purge removes it (1 to 3650).",
        min=1,
        max=3650,
        label="Keep archived documents (days)",
    ),
    Setting(
        PRINT_ARCHIVE_VIEWERS,
        str,
        "",
        "The approved administrators who may list, download and preview archived "
        "documents: user names separated by commas. Empty: nobody.",
        label="Approved administrators (Print Archive)",
    ),
    Setting(
        HOLD_TIMEOUT_MINUTES,
        int,
        240,
        "Minutes a held job waits for release before it expires and its spool file is "
        "destroyed (1 to 525600, one year).",
        min=1,
        max=525_600,
        label="Hold timeout (minutes)",
    ),
    Setting(
        CONVERSION_MEMORY_MB,
        int,
        256,
        "Largest document (MiB) converted at release when its format needs random access "
        "(PDF, and what texttopdf, imagetopdf or rastertopdf make of a job): it is held in "
        "memory, never on disk. A larger job is refused at printers that need a conversion "
        "(docs/formats.md).",
        min=1,
        max=65_536,
        label="Conversion memory limit (MiB)",
    ),
    Setting(
        CONVERSION_TIMEOUT_SECONDS,
        int,
        600,
        "A converter that produces no output for this long is stopped; the job stays held.",
        min=5,
        max=86_400,
        label="Conversion stall timeout (seconds)",
    ),
    Setting(
        HIDE_DOCUMENT_NAMES,
        bool,
        False,
        "Keep document names (job titles) out of the logs, the audit log and its export, "
        "and administrators' job lists; users still see their own at the release station.",
        label="Hide document names",
    ),
    Setting(
        REDACT_DOCUMENT_NAMES_AFTER_DAYS,
        int,
        0,
        "Erase the document names of jobs older than this many days from the database "
        "(0: never). The audit log is append-only: keep names out of it with "
        "hide_document_names.",
        min=0,
        max=3650,
        label="Erase document names after (days)",
    ),
    Setting(
        SMTP_HOST,
        str,
        "",
        "The mail relay for expiry reminders (host name or address; port 25 by default, "
        "no authentication). Empty: no reminders are sent.",
        label="Mail relay (SMTP host)",
    ),
    Setting(
        SMTP_PORT,
        int,
        25,
        "The mail relay's port (1 to 65535).",
        min=1,
        max=65535,
        label="Mail relay port",
    ),
    Setting(
        SMTP_FROM,
        str,
        "spoolvault@localhost",
        "The sender address of expiry reminders.",
        label="Reminder sender address",
    ),
    Setting(
        EXPIRY_REMINDER_MINUTES,
        int,
        30,
        "Mail a job's owner this many minutes before the job expires (0: never). Needs "
        "a mail relay and the user's e-mail address.",
        min=0,
        max=10_080,
        label="Expiry reminder (minutes before)",
    ),
    Setting(
        PUBLIC_URL,
        str,
        "",
        "This server's address as users reach it, e.g. https://print.example.org:8631; "
        "reminders link to it to keep a job longer. Empty: reminders carry no link.",
        label="Public address (for links in mails)",
    ),
    Setting(
        IPP_AUTHENTICATION_REQUIRED,
        bool,
        False,
        "Require a spoolvault user name and password (HTTP Basic, over IPPS where "
        "possible) to print to the hold queues over IPP. Off, the job owner is the "
        "requesting-user-name the client sends; release still needs the owner's "
        "credentials at the printer.",
        label="Require authentication to print (IPP)",
    ),
    Setting(
        RELEASE_STATION_IDLE_SECONDS,
        int,
        60,
        "Seconds without a touch or key press after which a web release station logs its "
        "user out (5 to 3600). The server ends the session after as long without a "
        "request, whatever the browser does.",
        min=5,
        max=3600,
        label="Release station idle logout (seconds)",
    ),
    Setting(
        RELEASE_STATION_CARD_PIN,
        bool,
        False,
        "Web release stations ask for the user's PIN together with the card number (card "
        "+ PIN). Off, a card alone logs in users who have no PIN.",
        label="Ask for the PIN with the card at release stations",
    ),
    Setting(
        "ldap_url",
        str,
        "",
        "The LDAP or Active Directory server (ldap://host or ldaps://host, certificates "
        "checked). Set with ldap_base_dn, users synced from it (source ldap) log in with "
        "their directory password; empty: no directory. The bind password comes from "
        "SPOOLVAULT_LDAP_PASSWORD_FILE or SPOOLVAULT_LDAP_PASSWORD, never from here.",
        label="Directory server URL",
    ),
    Setting(
        "ldap_base_dn",
        str,
        "",
        "Where the directory's user entries are (e.g. ou=people,dc=example,dc=org).",
        label="Directory base DN",
    ),
    Setting(
        "ldap_bind_dn",
        str,
        "",
        "The service account that searches for a user's entry (empty: anonymous).",
        label="Directory service account DN",
    ),
    Setting(
        "ldap_user_filter",
        str,
        "",
        "The filter of user entries (empty: (objectClass=inetOrgPerson), or AD's persons).",
        label="Directory user filter",
    ),
    Setting(
        "ldap_username_attribute",
        str,
        "",
        "The attribute that holds the user name (empty: uid, or sAMAccountName for AD).",
        label="Directory user name attribute",
    ),
    Setting(
        "ldap_start_tls",
        bool,
        False,
        "Upgrade an ldap:// connection with StartTLS (certificates checked).",
        label="Directory StartTLS",
    ),
    Setting(
        "ldap_ad",
        bool,
        False,
        "The directory is Active Directory: AD's defaults (sAMAccountName, displayName) "
        "and disabled accounts (userAccountControl) refused.",
        label="Directory is Active Directory",
    ),
    Setting(
        FAST_RELEASE_REQUIRE_PIN,
        bool,
        False,
        "Fast Release terminals must send the PIN with the card for users who have a PIN. "
        "Off, a card tap alone releases; users without a PIN release by card either way.",
        label="Require the PIN at Fast Release (users with a PIN)",
    ),
    Setting(
        MONITORING_PUBLIC,
        bool,
        False,
        "Let any client read /metrics and the detailed /healthz. Off, they answer only "
        "clients on this machine (loopback) and administrators (HTTP Basic); others get "
        "/healthz's bare status and 401 on /metrics.",
        label="Metrics and health details open to everyone",
    ),
)

BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

_CONFLICT_REASON = (
    "Print Archiving keeps a readable copy of every printed document for approved "
    "administrators, so it needs unencrypted spool files"
)


def _show(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def get(name: str) -> Setting:
    """The setting called ``name``, or InvalidSetting naming the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        known = ", ".join(BY_NAME)
        raise InvalidSetting(f"unknown setting {name!r} (known settings: {known})") from None


def defaults() -> dict[str, Any]:
    """Every setting at its default value."""
    return {s.name: s.default for s in SETTINGS}


def from_stored(stored: Mapping[str, object]) -> dict[str, Any]:
    """Defaults overlaid with stored values; unknown or invalid stored values are skipped.

    A stored name this build does not know is a setting of a newer release (after a
    downgrade); it is kept in the database untouched and ignored here.
    """
    out = defaults()
    for name, value in stored.items():
        setting = BY_NAME.get(name)
        if setting is None:
            log.debug("ignoring stored setting %r, unknown to this version", name)
            continue
        try:
            out[name] = setting.check(value)
        except InvalidSetting as exc:
            log.warning("stored setting ignored, default used: %s", exc)
    return out


def validate(changes: Mapping[str, object], current: Mapping[str, object]) -> dict[str, Any]:
    """Check ``changes`` against the table and return the full new settings.

    ``current`` is the server's present settings (missing names take their defaults).
    Raises InvalidSetting for an unknown name or a bad value, and SettingsConflict when
    the result would have both Spool File Encryption and Print Archiving on.
    """
    new = from_stored(current)
    for name, value in changes.items():
        new[name] = get(name).check(value)
    if new[SPOOL_FILE_ENCRYPTION] and new[PRINT_ARCHIVING]:
        turning_on = {n for n in (SPOOL_FILE_ENCRYPTION, PRINT_ARCHIVING) if changes.get(n)}
        if turning_on == {PRINT_ARCHIVING}:
            advice = "turn off Spool File Encryption first"
        elif turning_on == {SPOOL_FILE_ENCRYPTION}:
            advice = "turn off Print Archiving first"
        elif turning_on:
            advice = "enable only one of them"
        else:
            advice = "turn off Spool File Encryption first (or Print Archiving)"
        raise SettingsConflict(
            f"Spool File Encryption and Print Archiving cannot both be enabled: "
            f"{_CONFLICT_REASON}; {advice}."
        )
    return new
