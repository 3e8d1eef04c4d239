"""schemathesis against the real server's OpenAPI document: no input gives a 5xx.

Every operation of /api/v1 (administrator credentials, so the handlers run rather than
stop at 401) gets schema-generated and schema-violating requests; the only check that
must hold is that the server never answers with a server error. Deterministic (a fixed
seed) so that a run in CI repeats the one before; `bench/` is the place for long runs.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.server import start_server

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
ADMIN = ("admin", "admin-pw-123")


@pytest.mark.skipif(not Path(SCHEMATHESIS).exists(), reason="schemathesis is not installed")
def test_no_request_makes_the_api_answer_with_a_server_error(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", env={"SPOOLVAULT_ADMIN_PASSWORD": ADMIN[1]})
    try:
        auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
        done = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{srv.url}/api/v1/openapi.json",
                "--url",
                f"{srv.url}/api/v1",
                "--checks",
                "not_a_server_error",
                "--phases",
                "fuzzing",
                "--max-examples",
                "15",
                "--workers",
                "2",
                "--seed",
                "20261124",
                "--generation-deterministic",
                "-H",
                f"Authorization: Basic {auth}",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its cache goes there, not into the checkout
        )
    finally:
        srv.stop()
    summary = done.stdout[-4000:]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counts is not None and counts.group(1) == counts.group(2), summary
    assert int(counts.group(1)) >= 100, summary  # it really exercised the API
