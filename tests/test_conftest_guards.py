"""tests/conftest.py's guards, run on small generated test files in a pytest
subprocess (a fresh interpreter: its unhandled Deferreds and its reactor are
its own, not this run's).

A test that logs an error reports the error at its teardown, where the guard
looks: the run fails, naming the test and what was logged.
"""
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

UNHANDLED_DEFERRED = """
from twisted.internet import defer


def test_drops_a_failed_deferred():
    d = defer.Deferred()
    d.addCallback(lambda _: 1 / 0)
    d.callback(None)
    d.cycle = d  # only the garbage collector can free it (and log its error)
"""

LOG_FAILURE = """
import pytest
from twisted.logger import Logger
from twisted.python import log


{mark}
def test_logs_a_failure():
    try:
        1 / 0
    except ZeroDivisionError:
        Logger().failure("the division went wrong")


{mark}
def test_logs_a_legacy_error():
    try:
        {{}}["missing"]
    except KeyError:
        log.err(None, "the lookup went wrong")
"""


@pytest.fixture
def project(pytester):
    """A pytester directory with our conftest and markers."""
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\nmarkers =\n    allow_errors: expected errors\n")
    return pytester


def run(project, source):
    project.makepyfile(test_generated=source)
    return project.runpytest_subprocess()


def test_an_unhandled_deferred_error_fails_the_test(project):
    result = run(project, UNHANDLED_DEFERRED)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_drops_a_failed_deferred*",
                                 "*Unhandled error in Deferred*", "*ZeroDivisionError*"])


def test_twisted_log_failure_and_legacy_log_err_fail_the_test(project):
    result = run(project, LOG_FAILURE.format(mark=""))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_logs_a_failure*",
                                 "*the division went wrong*", "*ZeroDivisionError*",
                                 "*ERROR at teardown of test_logs_a_legacy_error*",
                                 "*the lookup went wrong*", "*KeyError*"])


def test_allow_errors_allows_twisted_logged_errors(project):
    result = run(project, LOG_FAILURE.format(mark="@pytest.mark.allow_errors"))
    result.assert_outcomes(passed=2)


def test_an_unreachable_postgresql_stops_the_session_at_once(project, monkeypatch):
    monkeypatch.setenv("BILLGW_TEST_PG_URL", "postgresql+psycopg://billgw:s3cret@127.0.0.1:1/test")
    result = run(project, "def test_nothing():\n    pass\n")
    assert result.ret == 3
    assert "postgresql+psycopg://billgw:***@127.0.0.1:1/test" in result.stdout.str() + result.stderr.str()
    assert "s3cret" not in result.stdout.str() + result.stderr.str()
