"""IPP numbers: group and value tags, operation ids, status codes and common enums.

Sources: RFC 8010 §3.5 (tags), RFC 8011 §4.1.6 / §5.4.15 (status codes, operation ids),
the IANA IPP registry and PWG 5100.x extensions, and the CUPS private operations
(0x4001-0x4028), cross-checked against OpenPrinting libcups `ipp-support.c`.
"""

from __future__ import annotations

from enum import IntEnum


class GroupTag(IntEnum):
    """Delimiter tags (RFC 8010 §3.5.1). 0x00 is invalid and 0x0B-0x0F are reserved."""

    OPERATION = 0x01
    JOB = 0x02
    END = 0x03
    PRINTER = 0x04
    UNSUPPORTED = 0x05
    SUBSCRIPTION = 0x06
    EVENT_NOTIFICATION = 0x07
    RESOURCE = 0x08
    DOCUMENT = 0x09
    SYSTEM = 0x0A


class ValueTag(IntEnum):
    """Value tags (RFC 8010 §3.5.2). 0x10-0x1F are out-of-band: they carry no value."""

    UNSUPPORTED = 0x10
    DEFAULT = 0x11
    UNKNOWN = 0x12
    NO_VALUE = 0x13
    NOT_SETTABLE = 0x15
    DELETE_ATTRIBUTE = 0x16
    ADMIN_DEFINE = 0x17
    INTEGER = 0x21
    BOOLEAN = 0x22
    ENUM = 0x23
    OCTET_STRING = 0x30
    DATETIME = 0x31
    RESOLUTION = 0x32
    RANGE_OF_INTEGER = 0x33
    BEGIN_COLLECTION = 0x34
    TEXT_WITH_LANGUAGE = 0x35
    NAME_WITH_LANGUAGE = 0x36
    END_COLLECTION = 0x37
    TEXT = 0x41
    NAME = 0x42
    KEYWORD = 0x44
    URI = 0x45
    URI_SCHEME = 0x46
    CHARSET = 0x47
    NATURAL_LANGUAGE = 0x48
    MIME_MEDIA_TYPE = 0x49
    MEMBER_NAME = 0x4A
    EXTENSION = 0x7F


# RFC 8010 §3.5.2 syntax names, as ipptool and the PWG documents spell them.
_TAG_NAMES: dict[int, str] = {
    0x01: "operation-attributes-tag",
    0x02: "job-attributes-tag",
    0x03: "end-of-attributes-tag",
    0x04: "printer-attributes-tag",
    0x05: "unsupported-attributes-tag",
    0x06: "subscription-attributes-tag",
    0x07: "event-notification-attributes-tag",
    0x08: "resource-attributes-tag",
    0x09: "document-attributes-tag",
    0x0A: "system-attributes-tag",
    0x10: "unsupported",
    0x11: "default",
    0x12: "unknown",
    0x13: "no-value",
    0x15: "not-settable",
    0x16: "delete-attribute",
    0x17: "admin-define",
    0x21: "integer",
    0x22: "boolean",
    0x23: "enum",
    0x30: "octetString",
    0x31: "dateTime",
    0x32: "resolution",
    0x33: "rangeOfInteger",
    0x34: "begCollection",
    0x35: "textWithLanguage",
    0x36: "nameWithLanguage",
    0x37: "endCollection",
    0x41: "textWithoutLanguage",
    0x42: "nameWithoutLanguage",
    0x44: "keyword",
    0x45: "uri",
    0x46: "uriScheme",
    0x47: "charset",
    0x48: "naturalLanguage",
    0x49: "mimeMediaType",
    0x4A: "memberAttrName",
    0x7F: "extension",
}


def tag_name(tag: int) -> str:
    """The RFC 8010 name of a group or value tag ("keyword"), or "0xNN" if unassigned."""
    return _TAG_NAMES.get(tag, f"0x{tag:02x}")


class Operation(IntEnum):
    """Operation ids: RFC 8011, RFC 3380/3995/3996/3998, PWG 5100.x, and CUPS (0x4001+)."""

    PRINT_JOB = 0x0002
    PRINT_URI = 0x0003
    VALIDATE_JOB = 0x0004
    CREATE_JOB = 0x0005
    SEND_DOCUMENT = 0x0006
    SEND_URI = 0x0007
    CANCEL_JOB = 0x0008
    GET_JOB_ATTRIBUTES = 0x0009
    GET_JOBS = 0x000A
    GET_PRINTER_ATTRIBUTES = 0x000B
    HOLD_JOB = 0x000C
    RELEASE_JOB = 0x000D
    RESTART_JOB = 0x000E
    PAUSE_PRINTER = 0x0010
    RESUME_PRINTER = 0x0011
    PURGE_JOBS = 0x0012
    SET_PRINTER_ATTRIBUTES = 0x0013
    SET_JOB_ATTRIBUTES = 0x0014
    GET_PRINTER_SUPPORTED_VALUES = 0x0015
    CREATE_PRINTER_SUBSCRIPTIONS = 0x0016
    CREATE_JOB_SUBSCRIPTIONS = 0x0017
    GET_SUBSCRIPTION_ATTRIBUTES = 0x0018
    GET_SUBSCRIPTIONS = 0x0019
    RENEW_SUBSCRIPTION = 0x001A
    CANCEL_SUBSCRIPTION = 0x001B
    GET_NOTIFICATIONS = 0x001C
    SEND_NOTIFICATIONS = 0x001D
    GET_RESOURCE_ATTRIBUTES = 0x001E
    GET_RESOURCE_DATA = 0x001F
    GET_RESOURCES = 0x0020
    GET_PRINTER_SUPPORT_FILES = 0x0021
    ENABLE_PRINTER = 0x0022
    DISABLE_PRINTER = 0x0023
    PAUSE_PRINTER_AFTER_CURRENT_JOB = 0x0024
    HOLD_NEW_JOBS = 0x0025
    RELEASE_HELD_NEW_JOBS = 0x0026
    DEACTIVATE_PRINTER = 0x0027
    ACTIVATE_PRINTER = 0x0028
    RESTART_PRINTER = 0x0029
    SHUTDOWN_PRINTER = 0x002A
    STARTUP_PRINTER = 0x002B
    REPROCESS_JOB = 0x002C
    CANCEL_CURRENT_JOB = 0x002D
    SUSPEND_CURRENT_JOB = 0x002E
    RESUME_JOB = 0x002F
    PROMOTE_JOB = 0x0030
    SCHEDULE_JOB_AFTER = 0x0031
    CANCEL_DOCUMENT = 0x0033
    GET_DOCUMENT_ATTRIBUTES = 0x0034
    GET_DOCUMENTS = 0x0035
    DELETE_DOCUMENT = 0x0036
    SET_DOCUMENT_ATTRIBUTES = 0x0037
    CANCEL_JOBS = 0x0038
    CANCEL_MY_JOBS = 0x0039
    RESUBMIT_JOB = 0x003A
    CLOSE_JOB = 0x003B
    IDENTIFY_PRINTER = 0x003C
    VALIDATE_DOCUMENT = 0x003D
    ADD_DOCUMENT_IMAGES = 0x003E
    ACKNOWLEDGE_DOCUMENT = 0x003F
    ACKNOWLEDGE_IDENTIFY_PRINTER = 0x0040
    ACKNOWLEDGE_JOB = 0x0041
    FETCH_DOCUMENT = 0x0042
    FETCH_JOB = 0x0043
    GET_OUTPUT_DEVICE_ATTRIBUTES = 0x0044
    UPDATE_ACTIVE_JOBS = 0x0045
    DEREGISTER_OUTPUT_DEVICE = 0x0046
    UPDATE_DOCUMENT_STATUS = 0x0047
    UPDATE_JOB_STATUS = 0x0048
    UPDATE_OUTPUT_DEVICE_ATTRIBUTES = 0x0049
    GET_NEXT_DOCUMENT_DATA = 0x004A
    ALLOCATE_PRINTER_RESOURCES = 0x004B
    CREATE_PRINTER = 0x004C
    DEALLOCATE_PRINTER_RESOURCES = 0x004D
    DELETE_PRINTER = 0x004E
    GET_PRINTERS = 0x004F
    SHUTDOWN_ONE_PRINTER = 0x0050
    STARTUP_ONE_PRINTER = 0x0051
    CANCEL_RESOURCE = 0x0052
    CREATE_RESOURCE = 0x0053
    INSTALL_RESOURCE = 0x0054
    SEND_RESOURCE_DATA = 0x0055
    SET_RESOURCE_ATTRIBUTES = 0x0056
    CREATE_RESOURCE_SUBSCRIPTIONS = 0x0057
    CREATE_SYSTEM_SUBSCRIPTIONS = 0x0058
    DISABLE_ALL_PRINTERS = 0x0059
    ENABLE_ALL_PRINTERS = 0x005A
    GET_SYSTEM_ATTRIBUTES = 0x005B
    GET_SYSTEM_SUPPORTED_VALUES = 0x005C
    PAUSE_ALL_PRINTERS = 0x005D
    PAUSE_ALL_PRINTERS_AFTER_CURRENT_JOB = 0x005E
    REGISTER_OUTPUT_DEVICE = 0x005F
    RESTART_SYSTEM = 0x0060
    RESUME_ALL_PRINTERS = 0x0061
    SET_SYSTEM_ATTRIBUTES = 0x0062
    SHUTDOWN_ALL_PRINTERS = 0x0063
    STARTUP_ALL_PRINTERS = 0x0064
    GET_PRINTER_RESOURCES = 0x0065
    GET_USER_PRINTER_ATTRIBUTES = 0x0066
    RESTART_ONE_PRINTER = 0x0067
    ACKNOWLEDGE_ENCRYPTED_JOB_ATTRIBUTES = 0x0068
    FETCH_ENCRYPTED_JOB_ATTRIBUTES = 0x0069
    GET_ENCRYPTED_JOB_ATTRIBUTES = 0x006A
    # CUPS private operations (CUPS Implementation of IPP, §3).
    CUPS_GET_DEFAULT = 0x4001
    CUPS_GET_PRINTERS = 0x4002
    CUPS_ADD_MODIFY_PRINTER = 0x4003
    CUPS_DELETE_PRINTER = 0x4004
    CUPS_GET_CLASSES = 0x4005
    CUPS_ADD_MODIFY_CLASS = 0x4006
    CUPS_DELETE_CLASS = 0x4007
    CUPS_ACCEPT_JOBS = 0x4008
    CUPS_REJECT_JOBS = 0x4009
    CUPS_SET_DEFAULT = 0x400A
    CUPS_GET_DEVICES = 0x400B
    CUPS_GET_PPDS = 0x400C
    CUPS_MOVE_JOB = 0x400D
    CUPS_AUTHENTICATE_JOB = 0x400E
    CUPS_GET_PPD = 0x400F
    CUPS_GET_DOCUMENT = 0x4027
    CUPS_CREATE_LOCAL_PRINTER = 0x4028

    @property
    def ipp_name(self) -> str:
        """The operation's name as IPP documents and ipptool spell it ("Print-Job")."""
        return _OPERATION_NAMES[self]


# Spelled out, not derived from the member names: "Print-URI", "CUPS-Get-PPDs".
_OPERATION_NAMES: dict[int, str] = {
    0x0002: "Print-Job",
    0x0003: "Print-URI",
    0x0004: "Validate-Job",
    0x0005: "Create-Job",
    0x0006: "Send-Document",
    0x0007: "Send-URI",
    0x0008: "Cancel-Job",
    0x0009: "Get-Job-Attributes",
    0x000A: "Get-Jobs",
    0x000B: "Get-Printer-Attributes",
    0x000C: "Hold-Job",
    0x000D: "Release-Job",
    0x000E: "Restart-Job",
    0x0010: "Pause-Printer",
    0x0011: "Resume-Printer",
    0x0012: "Purge-Jobs",
    0x0013: "Set-Printer-Attributes",
    0x0014: "Set-Job-Attributes",
    0x0015: "Get-Printer-Supported-Values",
    0x0016: "Create-Printer-Subscriptions",
    0x0017: "Create-Job-Subscriptions",
    0x0018: "Get-Subscription-Attributes",
    0x0019: "Get-Subscriptions",
    0x001A: "Renew-Subscription",
    0x001B: "Cancel-Subscription",
    0x001C: "Get-Notifications",
    0x001D: "Send-Notifications",
    0x001E: "Get-Resource-Attributes",
    0x001F: "Get-Resource-Data",
    0x0020: "Get-Resources",
    0x0021: "Get-Printer-Support-Files",
    0x0022: "Enable-Printer",
    0x0023: "Disable-Printer",
    0x0024: "Pause-Printer-After-Current-Job",
    0x0025: "Hold-New-Jobs",
    0x0026: "Release-Held-New-Jobs",
    0x0027: "Deactivate-Printer",
    0x0028: "Activate-Printer",
    0x0029: "Restart-Printer",
    0x002A: "Shutdown-Printer",
    0x002B: "Startup-Printer",
    0x002C: "Reprocess-Job",
    0x002D: "Cancel-Current-Job",
    0x002E: "Suspend-Current-Job",
    0x002F: "Resume-Job",
    0x0030: "Promote-Job",
    0x0031: "Schedule-Job-After",
    0x0033: "Cancel-Document",
    0x0034: "Get-Document-Attributes",
    0x0035: "Get-Documents",
    0x0036: "Delete-Document",
    0x0037: "Set-Document-Attributes",
    0x0038: "Cancel-Jobs",
    0x0039: "Cancel-My-Jobs",
    0x003A: "Resubmit-Job",
    0x003B: "Close-Job",
    0x003C: "Identify-Printer",
    0x003D: "Validate-Document",
    0x003E: "Add-Document-Images",
    0x003F: "Acknowledge-Document",
    0x0040: "Acknowledge-Identify-Printer",
    0x0041: "Acknowledge-Job",
    0x0042: "Fetch-Document",
    0x0043: "Fetch-Job",
    0x0044: "Get-Output-Device-Attributes",
    0x0045: "Update-Active-Jobs",
    0x0046: "Deregister-Output-Device",
    0x0047: "Update-Document-Status",
    0x0048: "Update-Job-Status",
    0x0049: "Update-Output-Device-Attributes",
    0x004A: "Get-Next-Document-Data",
    0x004B: "Allocate-Printer-Resources",
    0x004C: "Create-Printer",
    0x004D: "Deallocate-Printer-Resources",
    0x004E: "Delete-Printer",
    0x004F: "Get-Printers",
    0x0050: "Shutdown-One-Printer",
    0x0051: "Startup-One-Printer",
    0x0052: "Cancel-Resource",
    0x0053: "Create-Resource",
    0x0054: "Install-Resource",
    0x0055: "Send-Resource-Data",
    0x0056: "Set-Resource-Attributes",
    0x0057: "Create-Resource-Subscriptions",
    0x0058: "Create-System-Subscriptions",
    0x0059: "Disable-All-Printers",
    0x005A: "Enable-All-Printers",
    0x005B: "Get-System-Attributes",
    0x005C: "Get-System-Supported-Values",
    0x005D: "Pause-All-Printers",
    0x005E: "Pause-All-Printers-After-Current-Job",
    0x005F: "Register-Output-Device",
    0x0060: "Restart-System",
    0x0061: "Resume-All-Printers",
    0x0062: "Set-System-Attributes",
    0x0063: "Shutdown-All-Printers",
    0x0064: "Startup-All-Printers",
    0x0065: "Get-Printer-Resources",
    0x0066: "Get-User-Printer-Attributes",
    0x0067: "Restart-One-Printer",
    0x0068: "Acknowledge-Encrypted-Job-Attributes",
    0x0069: "Fetch-Encrypted-Job-Attributes",
    0x006A: "Get-Encrypted-Job-Attributes",
    0x4001: "CUPS-Get-Default",
    0x4002: "CUPS-Get-Printers",
    0x4003: "CUPS-Add-Modify-Printer",
    0x4004: "CUPS-Delete-Printer",
    0x4005: "CUPS-Get-Classes",
    0x4006: "CUPS-Add-Modify-Class",
    0x4007: "CUPS-Delete-Class",
    0x4008: "CUPS-Accept-Jobs",
    0x4009: "CUPS-Reject-Jobs",
    0x400A: "CUPS-Set-Default",
    0x400B: "CUPS-Get-Devices",
    0x400C: "CUPS-Get-PPDs",
    0x400D: "CUPS-Move-Job",
    0x400E: "CUPS-Authenticate-Job",
    0x400F: "CUPS-Get-PPD",
    0x4027: "CUPS-Get-Document",
    0x4028: "CUPS-Create-Local-Printer",
}


def operation_name(code: int) -> str:
    """The IPP name of an operation id ("Print-Job"), or "0xNNNN" for an unassigned one."""
    return _OPERATION_NAMES.get(code, f"0x{code:04x}")


class Status(IntEnum):
    """Status codes: RFC 8011 §4.1.6 and the IANA registry (names as in libcups)."""

    SUCCESSFUL_OK = 0x0000
    SUCCESSFUL_OK_IGNORED_OR_SUBSTITUTED_ATTRIBUTES = 0x0001
    SUCCESSFUL_OK_CONFLICTING_ATTRIBUTES = 0x0002
    SUCCESSFUL_OK_IGNORED_SUBSCRIPTIONS = 0x0003
    SUCCESSFUL_OK_IGNORED_NOTIFICATIONS = 0x0004
    SUCCESSFUL_OK_TOO_MANY_EVENTS = 0x0005
    SUCCESSFUL_OK_BUT_CANCEL_SUBSCRIPTION = 0x0006
    SUCCESSFUL_OK_EVENTS_COMPLETE = 0x0007
    REDIRECTION_OTHER_SITE = 0x0200
    CLIENT_ERROR_BAD_REQUEST = 0x0400
    CLIENT_ERROR_FORBIDDEN = 0x0401
    CLIENT_ERROR_NOT_AUTHENTICATED = 0x0402
    CLIENT_ERROR_NOT_AUTHORIZED = 0x0403
    CLIENT_ERROR_NOT_POSSIBLE = 0x0404
    CLIENT_ERROR_TIMEOUT = 0x0405
    CLIENT_ERROR_NOT_FOUND = 0x0406
    CLIENT_ERROR_GONE = 0x0407
    CLIENT_ERROR_REQUEST_ENTITY_TOO_LARGE = 0x0408
    CLIENT_ERROR_REQUEST_VALUE_TOO_LONG = 0x0409
    CLIENT_ERROR_DOCUMENT_FORMAT_NOT_SUPPORTED = 0x040A
    CLIENT_ERROR_ATTRIBUTES_OR_VALUES_NOT_SUPPORTED = 0x040B
    CLIENT_ERROR_URI_SCHEME_NOT_SUPPORTED = 0x040C
    CLIENT_ERROR_CHARSET_NOT_SUPPORTED = 0x040D
    CLIENT_ERROR_CONFLICTING_ATTRIBUTES = 0x040E
    CLIENT_ERROR_COMPRESSION_NOT_SUPPORTED = 0x040F
    CLIENT_ERROR_COMPRESSION_ERROR = 0x0410
    CLIENT_ERROR_DOCUMENT_FORMAT_ERROR = 0x0411
    CLIENT_ERROR_DOCUMENT_ACCESS_ERROR = 0x0412
    CLIENT_ERROR_ATTRIBUTES_NOT_SETTABLE = 0x0413
    CLIENT_ERROR_IGNORED_ALL_SUBSCRIPTIONS = 0x0414
    CLIENT_ERROR_TOO_MANY_SUBSCRIPTIONS = 0x0415
    CLIENT_ERROR_IGNORED_ALL_NOTIFICATIONS = 0x0416
    CLIENT_ERROR_PRINT_SUPPORT_FILE_NOT_FOUND = 0x0417
    CLIENT_ERROR_DOCUMENT_PASSWORD_ERROR = 0x0418
    CLIENT_ERROR_DOCUMENT_PERMISSION_ERROR = 0x0419
    CLIENT_ERROR_DOCUMENT_SECURITY_ERROR = 0x041A
    CLIENT_ERROR_DOCUMENT_UNPRINTABLE_ERROR = 0x041B
    CLIENT_ERROR_ACCOUNT_INFO_NEEDED = 0x041C
    CLIENT_ERROR_ACCOUNT_CLOSED = 0x041D
    CLIENT_ERROR_ACCOUNT_LIMIT_REACHED = 0x041E
    CLIENT_ERROR_ACCOUNT_AUTHORIZATION_FAILED = 0x041F
    CLIENT_ERROR_NOT_FETCHABLE = 0x0420
    SERVER_ERROR_INTERNAL_ERROR = 0x0500
    SERVER_ERROR_OPERATION_NOT_SUPPORTED = 0x0501
    SERVER_ERROR_SERVICE_UNAVAILABLE = 0x0502
    SERVER_ERROR_VERSION_NOT_SUPPORTED = 0x0503
    SERVER_ERROR_DEVICE_ERROR = 0x0504
    SERVER_ERROR_TEMPORARY_ERROR = 0x0505
    SERVER_ERROR_NOT_ACCEPTING_JOBS = 0x0506
    SERVER_ERROR_BUSY = 0x0507
    SERVER_ERROR_JOB_CANCELED = 0x0508
    SERVER_ERROR_MULTIPLE_DOCUMENT_JOBS_NOT_SUPPORTED = 0x0509
    SERVER_ERROR_PRINTER_IS_DEACTIVATED = 0x050A
    SERVER_ERROR_TOO_MANY_JOBS = 0x050B
    SERVER_ERROR_TOO_MANY_DOCUMENTS = 0x050C

    @property
    def keyword(self) -> str:
        """The status keyword of RFC 8011 §4.1.6 ("client-error-bad-request")."""
        return self.name.lower().replace("_", "-")

    @property
    def is_successful(self) -> bool:
        """True for the successful-ok* codes (0x0000-0x00FF)."""
        return self < 0x0100


def status_name(code: int) -> str:
    """The keyword of a status code ("successful-ok"), or "0xNNNN" for an unassigned one."""
    try:
        return Status(code).keyword
    except ValueError:
        return f"0x{code:04x}"


class JobState(IntEnum):
    """job-state (RFC 8011 §5.3.7)."""

    PENDING = 3
    PENDING_HELD = 4
    PROCESSING = 5
    PROCESSING_STOPPED = 6
    CANCELED = 7
    ABORTED = 8
    COMPLETED = 9


class PrinterState(IntEnum):
    """printer-state (RFC 8011 §5.4.11)."""

    IDLE = 3
    PROCESSING = 4
    STOPPED = 5


class ResolutionUnits(IntEnum):
    """Units of a resolution value (RFC 8010 §3.9): dots per inch or per centimeter."""

    DPI = 3
    DPCM = 4
