"""Test harnesses: the real peers the tests talk to, and the clients that drive them.

Nothing here is a test; pytest collects none of it. Tests and bench scripts import these
modules as ``harness.<name>`` (``tests/`` is on the path: pytest puts it there for
``tests/conftest.py``, the bench scripts put it there themselves).

- ``server``: a real ``spoolvault run`` process, the CLI, and IPP requests to it
- ``web_helpers``: its REST API, release sessions, Print-Job, the browser's settings
- ``cupsd``, ``ippeve``, ``ipptool``, ``slapd``, ``snmpd``: private CUPS, ippeveprinter,
  ipptool suites, OpenLDAP and net-snmp instances
- ``fakeprinter``: an IPP printer on a real socket that fails on cue
- ``db_faults``: database engines that fail on cue
- ``tmpfs``: a real tmpfs mount (a full or read-only disk)
- ``drills``, ``fuzz``: the reliability drills and the parser fuzzer (tests/reliability
  runs them short, bench/soak.py long)
"""
