"""The attributes a hold queue reports (Get-Printer-Attributes) and those of a job.

A hold queue is a virtual printer: it accepts what the printers behind it print, and
reports the IPP/2.0 required set (PWG 5100.12 §6.2, RFC 8011 §5.4) so that clients
(CUPS, macOS, Windows, mobile) can print to it without a driver.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spoolvault.db import Job
from spoolvault.db import JobState as DbState
from spoolvault.ipp.constants import GroupTag, JobState, Operation, PrinterState, ValueTag
from spoolvault.ipp.message import (
    Attribute,
    AttributeGroup,
    Collection,
    Range,
    Resolution,
    StringWithLanguage,
    Value,
)
from spoolvault.util.text import clean_text

T = ValueTag

DEFAULT_QUEUE = "secure"  # the Find-Me queue, also at /ipp/print
DOCUMENT_FORMATS = (
    "application/octet-stream",
    "application/pdf",
    "application/postscript",
    "application/vnd.hp-pcl",
    "image/jpeg",
    "image/png",
    "image/pwg-raster",
    "image/urf",
    "text/plain",
)
# The raster capabilities offered with image/urf and image/pwg-raster: 300 and 600 dpi,
# 24-bit sRGB and 8-bit grey, the back side of a duplex sheet as is (what
# printer-resolution-supported and print-color-mode-supported say). urf-supported:
# version 1.4, copies, normal duplex back side, draft/normal/high quality (Apple's URF
# keywords, as CUPS and pappl send them); DNS-SD's URF key repeats them.
URF_SUPPORTED = ("V1.4", "CP1", "DM1", "PQ3-4-5", "RS300-600", "SRGB24", "W8")
PWG_RASTER_RESOLUTIONS = (300, 600)
PWG_RASTER_TYPES = ("sgray_8", "srgb_8")
OPERATIONS = (
    Operation.PRINT_JOB,
    Operation.VALIDATE_JOB,
    Operation.CREATE_JOB,
    Operation.SEND_DOCUMENT,
    Operation.CANCEL_JOB,
    Operation.GET_JOB_ATTRIBUTES,
    Operation.GET_JOBS,
    Operation.GET_PRINTER_ATTRIBUTES,
    Operation.HOLD_JOB,
    Operation.RELEASE_JOB,
    Operation.SET_JOB_ATTRIBUTES,
    Operation.CANCEL_MY_JOBS,
    Operation.CLOSE_JOB,
)
# PWG 5101.1 self-describing media names, with sizes in hundredths of millimetres.
MEDIA = {
    "iso_a4_210x297mm": (21000, 29700),
    "na_letter_8.5x11in": (21590, 27940),
    "na_legal_8.5x14in": (21590, 35560),
    "iso_a3_297x420mm": (29700, 42000),
    "iso_a5_148x210mm": (14800, 21000),
}
MEDIA_DEFAULT = "iso_a4_210x297mm"
MEDIA_TYPES = ("stationery", "stationery-letterhead", "transparency", "labels")
SIDES = ("one-sided", "two-sided-long-edge", "two-sided-short-edge")
JOB_HOLD_UNTIL = (
    "no-hold",
    "indefinite",
    "day-time",
    "evening",
    "night",
    "weekend",
    "second-shift",
    "third-shift",
)
MULTIPLE_OPERATION_TIME_OUT = 120  # seconds between Create-Job and its Send-Document
# What Set-Job-Attributes may change (job-settable-attributes-supported, RFC 3380 §4.2).
JOB_SETTABLE = ("job-hold-until", "job-priority")
JOB_PASSWORD_ENCRYPTIONS = ("none", "sha2-256")
JOB_PASSWORD_MIN = 4
JOB_PASSWORD_MAX = 255
MAX_COPIES = 999

# Attributes a client may send in the job template group; anything else is reported back
# in the unsupported group (RFC 8011 §4.1.7) and ignored.
JOB_TEMPLATE = {
    "copies",
    "finishings",
    "job-hold-until",
    "job-priority",
    "job-sheets",
    "media",
    "media-col",
    "multiple-document-handling",
    "number-up",
    "orientation-requested",
    "output-bin",
    "page-ranges",
    "print-color-mode",
    "print-quality",
    "print-scaling",
    "printer-resolution",
    "sides",
    "print-content-optimize",
    "job-account-id",
    "job-accounting-user-id",
    "job-name",
}


@dataclass(frozen=True)
class Queue:
    """A hold queue clients print to (``/printers/<name>``)."""

    name: str
    info: str
    location: str = ""
    uuid: str = ""
    mode: str = "hold"  # hold, admin-release or direct (a printer's own queue)
    # What clients may send: a printer's own queue offers what its printer says it takes.
    formats: tuple[str, ...] = DOCUMENT_FORMATS

    @property
    def default_format(self) -> str:
        auto = "application/octet-stream"
        return auto if auto in self.formats or not self.formats else self.formats[0]

    def printer_uuid(self) -> str:
        return self.uuid or f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'spoolvault:' + self.name)}"


def resource_path(queue: str) -> str:
    """The queue's path in IPP Everywhere's form, without the leading slash: DNS-SD's rp
    (PWG 5100.14 §4.2.2; its self-certification wants ipp/print or ipp/print/NAME). The
    server takes it as well as printers/<queue>."""
    return "ipp/print" if queue == DEFAULT_QUEUE else f"ipp/print/{queue}"


def queue_uuid(instance: uuid.UUID, name: str) -> str:
    """The printer-uuid of queue ``name`` of the installation ``instance`` (DataDir)."""
    return f"urn:uuid:{uuid.uuid5(instance, 'queue:' + name)}"


def _media_col(name: str) -> Collection:
    x, y = MEDIA[name]
    size = Collection(
        [
            Attribute("x-dimension", [Value(T.INTEGER, x)]),
            Attribute("y-dimension", [Value(T.INTEGER, y)]),
        ]
    )
    return Collection(
        [
            Attribute("media-size", [Value(T.BEGIN_COLLECTION, size)]),
            Attribute("media-size-name", [Value(T.KEYWORD, name)]),
            Attribute("media-type", [Value(T.KEYWORD, "stationery")]),
        ]
    )


def _add(group: AttributeGroup, name: str, tag: int, values: Iterable[Any]) -> None:
    group.attributes.append(Attribute(name, [Value(tag, v) for v in values]))


def printer_attributes(
    queue: Queue,
    *,
    uris: list[tuple[str, str, str]],
    state: PrinterState,
    queued: int,
    up_since: datetime,
    now: datetime,
) -> AttributeGroup:
    """Every attribute of a hold queue, in a printer-attributes group.

    ``uris`` is a list of (printer-uri, uri-security, uri-authentication) triples.
    """
    g = AttributeGroup(GroupTag.PRINTER, [])
    up = _epoch_seconds(now)
    _add(g, "printer-uri-supported", T.URI, [u for u, _, _ in uris])
    _add(g, "uri-security-supported", T.KEYWORD, [s for _, s, _ in uris])
    _add(g, "uri-authentication-supported", T.KEYWORD, [a for _, _, a in uris])
    _add(g, "printer-name", T.NAME, [queue.name])
    _add(g, "printer-info", T.TEXT, [queue.info[:127]])
    _add(g, "printer-location", T.TEXT, [queue.location[:127]])
    _add(g, "printer-make-and-model", T.TEXT, ["spoolvault secure release queue"])
    _add(
        g,
        "printer-more-info",
        T.URI,
        [uris[0][0].replace("ipp://", "http://", 1).replace("ipps://", "https://", 1)],
    )
    _add(g, "printer-uuid", T.URI, [queue.printer_uuid()])
    _add(g, "printer-state", T.ENUM, [int(state)])
    _add(g, "printer-state-reasons", T.KEYWORD, ["none"])
    _add(g, "printer-state-message", T.TEXT, ["Jobs are held until you release them at a printer"])
    _add(g, "printer-is-accepting-jobs", T.BOOLEAN, [True])
    _add(g, "queued-job-count", T.INTEGER, [queued])
    _add(g, "printer-up-time", T.INTEGER, [up])
    _add(g, "printer-current-time", T.DATETIME, [now])
    _add(g, "printer-config-change-time", T.INTEGER, [_epoch_seconds(up_since)])
    _add(g, "printer-state-change-time", T.INTEGER, [_epoch_seconds(up_since)])
    _add(g, "ipp-versions-supported", T.KEYWORD, ["1.0", "1.1", "2.0"])
    _add(g, "ipp-features-supported", T.KEYWORD, ["job-release"])
    _add(g, "operations-supported", T.ENUM, [int(op) for op in OPERATIONS])
    _add(g, "charset-configured", T.CHARSET, ["utf-8"])
    _add(g, "charset-supported", T.CHARSET, ["utf-8", "us-ascii"])
    _add(g, "natural-language-configured", T.NATURAL_LANGUAGE, ["en"])
    _add(g, "generated-natural-language-supported", T.NATURAL_LANGUAGE, ["en"])
    _add(g, "document-format-default", T.MIME_MEDIA_TYPE, [queue.default_format])
    _add(g, "document-format-supported", T.MIME_MEDIA_TYPE, queue.formats)
    # The raster spoolvault's own queues take (a printer's queue offers what its printer
    # says it takes, whose raster capabilities are the printer's, not these).
    own = queue.formats == DOCUMENT_FORMATS
    if own and "image/urf" in queue.formats:  # AirPrint: urf-supported goes with image/urf
        _add(g, "urf-supported", T.KEYWORD, URF_SUPPORTED)
    if own and "image/pwg-raster" in queue.formats:  # PWG 5100.14 §5.4
        dpi = [Resolution(r, r, 3) for r in PWG_RASTER_RESOLUTIONS]
        _add(g, "pwg-raster-document-resolution-supported", T.RESOLUTION, dpi)
        _add(g, "pwg-raster-document-sheet-back", T.KEYWORD, ["normal"])
        _add(g, "pwg-raster-document-type-supported", T.KEYWORD, PWG_RASTER_TYPES)
    _add(g, "compression-supported", T.KEYWORD, ["none"])
    _add(g, "pdl-override-supported", T.KEYWORD, ["attempted"])
    _add(g, "multiple-document-jobs-supported", T.BOOLEAN, [False])
    _add(g, "multiple-operation-time-out", T.INTEGER, [MULTIPLE_OPERATION_TIME_OUT])
    _add(g, "multiple-operation-time-out-action", T.KEYWORD, ["abort-job"])
    _add(g, "job-ids-supported", T.BOOLEAN, [True])
    _add(g, "job-settable-attributes-supported", T.KEYWORD, JOB_SETTABLE)
    _add(
        g,
        "which-jobs-supported",
        T.KEYWORD,
        [
            "completed",
            "not-completed",
            "all",
            "pending",
            "pending-held",
            "processing",
            "canceled",
            "aborted",
        ],
    )
    _add(g, "color-supported", T.BOOLEAN, [True])
    _add(g, "pages-per-minute", T.INTEGER, [60])
    _add(g, "pages-per-minute-color", T.INTEGER, [60])
    _add(g, "job-k-octets-supported", T.RANGE_OF_INTEGER, [Range(0, 2**31 - 1)])
    _add(g, "job-password-supported", T.INTEGER, [JOB_PASSWORD_MAX])
    _add(g, "job-password-encryption-supported", T.KEYWORD, JOB_PASSWORD_ENCRYPTIONS)
    _add(
        g,
        "job-password-length-supported",
        T.RANGE_OF_INTEGER,
        [Range(JOB_PASSWORD_MIN, JOB_PASSWORD_MAX)],
    )
    _add(g, "job-creation-attributes-supported", T.KEYWORD, sorted(JOB_TEMPLATE))
    # Job template: defaults and supported values (RFC 8011 §5.2, PWG 5100.12 §6.2).
    _add(g, "copies-default", T.INTEGER, [1])
    _add(g, "copies-supported", T.RANGE_OF_INTEGER, [Range(1, MAX_COPIES)])
    _add(g, "finishings-default", T.ENUM, [3])
    _add(g, "finishings-supported", T.ENUM, [3])
    _add(g, "job-hold-until-default", T.KEYWORD, ["no-hold"])
    _add(g, "job-hold-until-supported", T.KEYWORD, JOB_HOLD_UNTIL)
    _add(g, "job-priority-default", T.INTEGER, [50])
    _add(g, "job-priority-supported", T.INTEGER, [100])
    _add(g, "job-sheets-default", T.KEYWORD, ["none"])
    _add(g, "job-sheets-supported", T.KEYWORD, ["none"])
    _add(g, "media-default", T.KEYWORD, [MEDIA_DEFAULT])
    _add(g, "media-supported", T.KEYWORD, list(MEDIA))
    _add(g, "media-ready", T.KEYWORD, [MEDIA_DEFAULT, "na_letter_8.5x11in"])
    _add(g, "media-col-supported", T.KEYWORD, ["media-size", "media-size-name", "media-type"])
    _add(g, "media-col-default", T.BEGIN_COLLECTION, [_media_col(MEDIA_DEFAULT)])
    _add(
        g,
        "media-col-ready",
        T.BEGIN_COLLECTION,
        [_media_col(MEDIA_DEFAULT), _media_col("na_letter_8.5x11in")],
    )
    _add(
        g,
        "media-size-supported",
        T.BEGIN_COLLECTION,
        [_media_col(name).attributes[0].values[0].value for name in MEDIA],
    )
    _add(g, "media-type-supported", T.KEYWORD, MEDIA_TYPES)
    _add(
        g, "multiple-document-handling-default", T.KEYWORD, ["separate-documents-uncollated-copies"]
    )
    _add(
        g,
        "multiple-document-handling-supported",
        T.KEYWORD,
        ["separate-documents-uncollated-copies", "separate-documents-collated-copies"],
    )
    _add(g, "number-up-default", T.INTEGER, [1])
    _add(g, "number-up-supported", T.INTEGER, [1, 2, 4])
    _add(g, "orientation-requested-default", T.ENUM, [3])
    _add(g, "orientation-requested-supported", T.ENUM, [3, 4, 5, 6])
    _add(g, "output-bin-default", T.KEYWORD, ["face-down"])
    _add(g, "output-bin-supported", T.KEYWORD, ["face-down"])
    _add(g, "page-ranges-supported", T.BOOLEAN, [True])
    _add(g, "print-color-mode-default", T.KEYWORD, ["auto"])
    _add(g, "print-color-mode-supported", T.KEYWORD, ["auto", "color", "monochrome"])
    _add(g, "print-quality-default", T.ENUM, [4])
    _add(g, "print-quality-supported", T.ENUM, [3, 4, 5])
    _add(g, "printer-resolution-default", T.RESOLUTION, [Resolution(600, 600, 3)])
    _add(
        g,
        "printer-resolution-supported",
        T.RESOLUTION,
        [Resolution(300, 300, 3), Resolution(600, 600, 3)],
    )
    _add(g, "sides-default", T.KEYWORD, ["one-sided"])
    _add(g, "sides-supported", T.KEYWORD, SIDES)
    _add(g, "print-scaling-default", T.KEYWORD, ["auto"])
    _add(g, "print-scaling-supported", T.KEYWORD, ["auto", "fit", "fill", "none"])
    return g


PRINTER_DESCRIPTION_ONLY = {"media-col-database"}  # sent only when asked for by name
JOB_TEMPLATE_PRINTER = {
    n
    for n in (
        "copies-default",
        "copies-supported",
        "finishings-default",
        "finishings-supported",
        "job-hold-until-default",
        "job-hold-until-supported",
        "job-priority-default",
        "job-priority-supported",
        "job-sheets-default",
        "job-sheets-supported",
        "media-default",
        "media-supported",
        "media-ready",
        "media-col-default",
        "media-col-ready",
        "media-col-supported",
        "media-size-supported",
        "media-type-supported",
        "multiple-document-handling-default",
        "multiple-document-handling-supported",
        "number-up-default",
        "number-up-supported",
        "orientation-requested-default",
        "orientation-requested-supported",
        "output-bin-default",
        "output-bin-supported",
        "page-ranges-supported",
        "print-color-mode-default",
        "print-color-mode-supported",
        "print-quality-default",
        "print-quality-supported",
        "printer-resolution-default",
        "printer-resolution-supported",
        "sides-default",
        "sides-supported",
        "print-scaling-default",
        "print-scaling-supported",
    )
}


def select_printer(group: AttributeGroup, requested: list[str] | None) -> AttributeGroup:
    """Filter by requested-attributes (RFC 8011 §4.2.5.1: 'all', group names, names)."""
    if not requested or "all" in requested:
        return group
    wanted = set(requested)

    def wanted_by_group(name: str) -> bool:
        if "printer-description" in wanted and name not in JOB_TEMPLATE_PRINTER:
            return True
        if "job-template" in wanted and name in JOB_TEMPLATE_PRINTER:
            return True
        return "printer-defaults" in wanted and name.endswith("-default")

    keep = [a for a in group.attributes if a.name in wanted or wanted_by_group(a.name)]
    return AttributeGroup(group.tag, keep)


# Our job states, as IPP job-state and job-state-reasons (RFC 8011 §5.3.7-8, PWG 5100.11).
_STATE_MAP: dict[DbState, tuple[JobState, list[str]]] = {
    DbState.INCOMING: (JobState.PENDING_HELD, ["job-incoming", "job-hold-until-specified"]),
    DbState.HELD: (JobState.PENDING_HELD, ["job-hold-until-specified", "job-release-wait"]),
    DbState.RELEASING: (JobState.PROCESSING, ["job-printing"]),
    DbState.PRINTED: (JobState.COMPLETED, ["job-completed-successfully"]),
    DbState.CANCELLED: (JobState.CANCELED, ["job-canceled-by-user"]),
    DbState.EXPIRED: (JobState.CANCELED, ["job-canceled-at-device"]),
    DbState.FAILED: (JobState.PENDING_HELD, ["job-hold-until-specified", "job-release-wait"]),
    DbState.ABORTED: (JobState.ABORTED, ["aborted-by-system"]),
}


def ipp_state(job: Job) -> tuple[JobState, list[str]]:
    state, reasons = _STATE_MAP[job.state]
    if job.pin_hash is not None and state == JobState.PENDING_HELD:
        return state, [*reasons, "job-password-wait"]  # PWG 5100.11: its PIN releases it
    return state, list(reasons)


def _epoch_seconds(when: datetime | None) -> int:
    """An IPP "time" as CUPS and pappl give it: UNIX seconds, with printer-up-time the
    current UNIX time, so clients (lpstat, macOS) show real dates (RFC 8011 §5.4.29 only
    asks that both count seconds the same way)."""
    return int(when.timestamp()) if when is not None else 0


def _add_state(g: AttributeGroup, job: Job) -> None:
    state, reasons = ipp_state(job)
    _add(g, "job-state", T.ENUM, [int(state)])
    _add(g, "job-state-reasons", T.KEYWORD, reasons)
    message = job.state_reason or (
        "Held until you release it at a printer" if state == JobState.PENDING_HELD else ""
    )
    if message:
        _add(g, "job-state-message", T.TEXT, [clean_text(message, 255)])


def job_created_attributes(job: Job, *, job_uri: str) -> AttributeGroup:
    """The job group of a job-creation response (RFC 8011 §4.2.1.2), built alone: it is
    on every Print-Job's path, where the whole job group cost a tenth of intake CPU."""
    g = AttributeGroup(GroupTag.JOB, [])
    _add(g, "job-id", T.INTEGER, [job.id])
    _add(g, "job-uri", T.URI, [job_uri])
    _add_state(g, job)
    _add(g, "number-of-intervening-jobs", T.INTEGER, [0])
    return g


def job_attributes(job: Job, *, job_uri: str, printer_uri: str, now: datetime) -> AttributeGroup:
    """Every attribute of a job (RFC 8011 §5.3), in a job-attributes group."""
    g = AttributeGroup(GroupTag.JOB, [])
    created = job.created_at
    _add(g, "job-id", T.INTEGER, [job.id])
    _add(g, "job-uri", T.URI, [job_uri])
    _add(g, "job-uuid", T.URI, [f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, job_uri)}"])
    _add(g, "job-printer-uri", T.URI, [printer_uri])
    # Cleaned again on the way out: a job stored before names were cleaned at intake must
    # not put a control character in our reply (ipptool refuses such a name).
    _add(g, "job-name", T.NAME, [clean_text(job.title or "") or f"job {job.id}"])
    _add(g, "job-originating-user-name", T.NAME, [clean_text(job.owner) or "anonymous"])
    _add_state(g, job)
    _add(g, "job-k-octets", T.INTEGER, [(job.size + 1023) // 1024])
    hold = job.client_hold or "no-hold"
    # A time of day ("23:00") is a name: a keyword cannot hold ":" (RFC 8011 §5.1.4).
    _add(g, "job-hold-until", T.KEYWORD if hold in JOB_HOLD_UNTIL else T.NAME, [hold])
    _add(g, "job-printer-up-time", T.INTEGER, [_epoch_seconds(now)])
    _add(g, "time-at-creation", T.INTEGER, [_epoch_seconds(created)])
    _add(g, "time-at-processing", T.NO_VALUE, [None])
    if job.completed_at is not None:
        _add(g, "time-at-completed", T.INTEGER, [_epoch_seconds(job.completed_at)])
    else:
        _add(g, "time-at-completed", T.NO_VALUE, [None])
    _add(g, "date-time-at-creation", T.DATETIME, [created.astimezone(UTC)])
    _add(g, "document-format", T.MIME_MEDIA_TYPE, [job.document_format])
    _add(g, "number-of-documents", T.INTEGER, [0 if job.spool_name is None else 1])
    _add(g, "number-of-intervening-jobs", T.INTEGER, [0])
    if job.pages is not None:
        _add(g, "job-impressions", T.INTEGER, [job.pages])
    _add(
        g,
        "job-impressions-completed",
        T.INTEGER,
        [job.pages or 0 if job.state is DbState.PRINTED else 0],
    )
    _add(g, "job-password-protected", T.BOOLEAN, [job.pin_hash is not None])
    for attr in attributes_from_json(job.attributes):
        if attr.name not in g:
            g.attributes.append(attr)
    return g


JOB_DESCRIPTION_DEFAULT = ["job-uri", "job-id"]  # RFC 8011 §4.2.6: Get-Jobs default


# requested-attributes "job-template": JOB_TEMPLATE but job-name, a Job Description
# attribute (RFC 8011 §5.3.5) that clients may send with a new job.
_TEMPLATE_GROUP = JOB_TEMPLATE - {"job-name"}


def select_job(
    group: AttributeGroup, requested: list[str] | None, default: list[str]
) -> AttributeGroup:
    wanted = set(requested or default)
    if "all" in wanted:
        return group
    keep = [
        a
        for a in group.attributes
        if a.name in wanted
        or ("job-template" in wanted and a.name in _TEMPLATE_GROUP)
        or ("job-description" in wanted and a.name not in _TEMPLATE_GROUP)
    ]
    return AttributeGroup(group.tag, keep)


# -- job template attributes stored with the job (forwarded to the printer at release) ----


def _to_json(value: Value) -> Any:
    v = value.value
    if isinstance(v, Collection):
        return attributes_to_json(v.attributes)
    if isinstance(v, Resolution):
        return [v.x, v.y, v.units]
    if isinstance(v, Range):
        return [v.lower, v.upper]
    if isinstance(v, StringWithLanguage):
        return [v.language, v.text]
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def attributes_to_json(attrs: Iterable[Attribute]) -> list[Any]:
    """Job template attributes as JSON-able data that keeps every value tag."""
    return [[a.name, [[x.tag, _to_json(x)] for x in a.values]] for a in attrs]


def _from_json(tag: int, v: Any) -> Value:
    if tag == T.BEGIN_COLLECTION:
        return Value(
            tag, Collection([Attribute(n, [_from_json(t, x) for t, x in vals]) for n, vals in v])
        )
    if tag == T.RESOLUTION:
        return Value(tag, Resolution(*v))
    if tag == T.RANGE_OF_INTEGER:
        return Value(tag, Range(*v))
    if tag in (T.TEXT_WITH_LANGUAGE, T.NAME_WITH_LANGUAGE):
        return Value(tag, StringWithLanguage(*v))
    if tag == T.DATETIME:
        return Value(tag, datetime.fromisoformat(v))
    if tag == T.OCTET_STRING:
        return Value(tag, bytes.fromhex(v))
    return Value(tag, v)


def attributes_from_json(text: str) -> list[Attribute]:
    data = json.loads(text or "[]")
    if isinstance(data, dict):  # an empty or old-style record
        return []
    return [Attribute(n, [_from_json(t, x) for t, x in vals]) for n, vals in data]
