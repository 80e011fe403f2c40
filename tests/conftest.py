"""Shared fixtures: a CLI runner and small cached simulator sets."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import goggleqc.commands  # noqa: F401  (registers the sub-commands)
from goggleqc.cli import app


@pytest.fixture
def cli():
    """Run ``goggleqc ARGS...`` in-process; returns the click Result (exit_code, output)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run
