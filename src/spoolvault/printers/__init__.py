"""Printers: where released jobs go.

    registry.py   the printers jobs are released to (add, list, look up)
    delivery.py   sending a released job: ipp://, ipps://, socket:// (AppSocket), lpd://
    health.py     whether a printer can take a job now (IPP printer-state, SNMP)

Nothing is imported here, so that importing one module (the registry, from the IPP server)
does not pull in the others.
"""
