"""The network-facing parsers under mutation fuzzing: a short run here, 1M+ inputs each in
bench/soak.py (docs/reliability.md has the counts and rates measured)."""

from __future__ import annotations

import os
import time

import pytest

from harness import fuzz

COUNTS = {"ipp": 30_000, "lpd": 50_000, "pjl": 30_000}


@pytest.mark.parametrize("target", sorted(COUNTS))
def test_no_crash_no_hang(target: str) -> None:
    seed = int(os.environ.get("SPOOLVAULT_FUZZ_SEED", str(time.time_ns() % 1_000_000)))
    stats = fuzz.fuzz(target, COUNTS[target], seed)
    assert stats.findings == [], f"seed {seed}: " + "\n".join(stats.findings)
    assert stats.inputs == COUNTS[target]
    assert stats.slowest_s < fuzz.SLOW
    # Not vacuous: mutations reach past the first checks both ways.
    assert stats.accepted > 0 and stats.refused > 0


def test_a_finding_is_reported_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(rng: object, data: bytes) -> bool:
        if data.startswith(b"\x02"):
            raise KeyError("boom")
        return True

    monkeypatch.setitem(fuzz.TARGETS, "lpd", (broken, lambda: fuzz.LPD_SEEDS))
    stats = fuzz.fuzz("lpd", 2000, 1)
    assert stats.findings and stats.findings[0].startswith("KeyError")
