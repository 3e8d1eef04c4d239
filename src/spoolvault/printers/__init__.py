"""Printers: where released jobs go.

    registry.py   the printers jobs are released to (add, list, look up)
    uri.py        printer device URIs, parsed once for every user
    delivery/     sending a released job: ipp://, ipps://, socket:// (AppSocket), lpd://,
                  one module per scheme over shared wire code and the at-most-once rule
    health.py     whether a printer can take a job now (IPP printer-state, SNMP)
    http.py       the one HTTP/1.1 client (on h11) and TLS context both talk to printers with

Nothing is imported here, so that importing one module (the registry, from the IPP server)
does not pull in the others.
"""
