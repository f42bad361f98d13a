"""The suite's own logging hygiene (`conftest.log_levels`): a CLI command run in process by a module's
fixture (`pin_registry` does so) quiets `mcpgw.upstream`; the tests after it must still see that
logger's warnings in `caplog`, as on a worker that never ran the command. Before the fixture reset
levels to the session's, such a fixture's level outlived its module, and a later test that asserted
an upstream warning failed on whichever worker had run it first."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def quieted() -> None:
    from mcpgw.cli.output import quiet_logs

    quiet_logs()  # what `mcpgw pin` and the other upstream-starting commands do first


def test_a_module_fixture_runs_a_quiet_command(quieted: None) -> None:
    assert logging.getLogger("mcpgw.upstream").level == logging.NOTSET  # reset before this test, too


def test_a_later_test_still_sees_upstream_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mcpgw")
    logging.getLogger("mcpgw.upstream").warning("upstream up: something to say")
    assert "something to say" in caplog.text
