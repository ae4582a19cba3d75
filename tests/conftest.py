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


@pytest.fixture
def session_runs(tmp_path, monkeypatch):
    """Figures, results and records in the test's own folder (returned), runs in the session's: a test of
    conftest.AFTER_NOTEBOOKS reads back the runs that the notebooks' nbval run made before it."""
    for kind in ("figures", "results", "records"):
        monkeypatch.setenv(f"S2R2_{kind.upper()}_DIR", str(tmp_path / kind))
    return tmp_path
