"""Fixtures shared by the test files."""

import inspect

import pytest


@pytest.fixture
def spy(monkeypatch):
    """``spy(owner, name)`` wraps ``owner.name`` for the test: every call runs the real function and is recorded,
    in order, in the list it returns, as a dict of the call's arguments by name, defaults included: so check a
    value other than the default, or a call that drops the argument passes too."""
    def wrap(owner, name: str) -> list[dict]:
        real, calls = getattr(owner, name), []
        signature = inspect.signature(real)

        def recorded(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            calls.append(dict(bound.arguments))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)
        return calls
    return wrap
