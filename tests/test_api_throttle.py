"""The per-token throttle (one Redis script per request) decides and answers
Retry-After exactly as DRF's UserRateThrottle, which it replaces."""

import random
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from rest_framework import throttling

from conversations.api.throttling import UserRateThrottle


class Clock:
    now = 5_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(throttling.SimpleRateThrottle, "timer", clock)
    return clock


def request_of(pk: int):
    return SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=pk))


@pytest.mark.parametrize("rate", ["3/second", "5/minute"])
def test_decisions_and_waits_are_drfs(clock, rate, monkeypatch):
    # Users no other test uses, their logs removed before and after.
    ours, drfs = 990_001, 990_002
    keys = [f"throttle_user_{ours}", f"throttle_user_{drfs}"]
    cache.delete_many(keys)
    monkeypatch.setitem(throttling.SimpleRateThrottle.THROTTLE_RATES, "user", rate)
    steps = random.Random(7)
    _, period = UserRateThrottle().parse_rate(rate)
    try:
        decisions = []
        for _ in range(200):
            clock.now += steps.choice([0, 0, 0.01, 0.2, 0.5]) * period
            mine, theirs = UserRateThrottle(), throttling.UserRateThrottle()
            allowed = mine.allow_request(request_of(ours), None)
            assert allowed == theirs.allow_request(request_of(drfs), None)
            if not allowed:
                assert mine.wait() == pytest.approx(theirs.wait())
            decisions.append(allowed)
        assert True in decisions and False in decisions
    finally:
        cache.delete_many(keys)


def test_a_log_left_by_drfs_throttle_is_replaced(clock, monkeypatch):
    monkeypatch.setitem(
        throttling.SimpleRateThrottle.THROTTLE_RATES, "user", "2/second"
    )
    key = "throttle_user_990003"
    cache.set(key, [clock.now] * 5, 60)
    try:
        throttle = UserRateThrottle()
        assert throttle.allow_request(request_of(990_003), None)
        assert throttle.allow_request(request_of(990_003), None)
        assert not throttle.allow_request(request_of(990_003), None)
        assert throttle.wait() == pytest.approx(1.0)
    finally:
        cache.delete(key)
