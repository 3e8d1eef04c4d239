"""The IPP front end of intake: IPP/2.0 over HTTP POST, on the hold queues.

``server.py`` takes the HTTP request (authentication, parsing, dispatch), ``printer.py``
the operations on a queue (Print-Job, Create-Job, Get-Jobs, ...), ``jobs.py`` those on one
job (Send-Document, Cancel-Job, Hold-Job, ...), ``request.py`` what they share: the
request's context, its error and its answers. The protocol itself (codec, constants,
attributes) is the package ``spoolvault.ipp``.
"""

from spoolvault.intake.ipp.request import Context, IppError
from spoolvault.intake.ipp.server import IppServer

__all__ = ["Context", "IppError", "IppServer"]
