"""Release station sessions in process, with an injected clock: idle and absolute expiry."""

from __future__ import annotations

from spoolvault.stations.web import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_idle_time_and_every_request_restarts_it() -> None:
    clock = Clock()
    store = SessionStore(clock)
    session = store.open("ann", is_admin=False, idle=60)
    assert store.get(session.token, idle=60) is session
    clock.now += 59
    assert store.get(session.token, idle=60) is session
    clock.now += 59  # 59 s after the last request: still alive
    assert store.get(session.token, idle=60) is session
    clock.now += 61
    assert store.get(session.token, idle=60) is None
    assert len(store) == 0
    clock.now -= 61  # gone for good, even if the clock went back
    assert store.get(session.token, idle=60) is None


def test_a_busy_session_still_ends_after_its_maximum_age() -> None:
    clock = Clock()
    store = SessionStore(clock, max_age=300)
    session = store.open("ann", is_admin=False, idle=60)
    for _ in range(5):
        clock.now += 50
        assert store.get(session.token, idle=60) is session
    clock.now += 51
    assert store.get(session.token, idle=60) is None


def test_tokens_are_fresh_secret_and_the_store_is_bounded() -> None:
    clock = Clock()
    store = SessionStore(clock, max_sessions=3)
    sessions = [store.open(f"u{n}", is_admin=False, idle=60) for n in range(4)]
    assert len({s.token for s in sessions}) == 4 and len({s.csrf for s in sessions}) == 4
    assert all(len(s.token) >= 40 and s.token != s.csrf for s in sessions)
    assert store.get(sessions[0].token, idle=60) is None  # the oldest went first
    assert store.get(sessions[3].token, idle=60) is sessions[3]
    assert sessions[3].token not in repr(sessions[3]) and sessions[3].csrf not in repr(sessions[3])
    assert store.get(None, idle=60) is None and store.get("", idle=60) is None
    store.close(sessions[3])
    assert store.get(sessions[3].token, idle=60) is None
