"""Progress of long work: plain lines off a terminal, a bar on one, nothing under --quiet."""

import io
import logging

import pytest

from toolkit import progress as P


@pytest.fixture
def lines(log_lines):
    """Progress lines as logged, with the ``toolkit`` logger at INFO (the CLI's --quiet changes it)."""
    return log_lines(P.log.name, level_of="toolkit")


def test_plain_lines_off_a_terminal_say_how_far_and_how_long(lines, monkeypatch):
    monkeypatch.setattr(P.sys, "stderr", io.StringIO())  # not a terminal
    now = [0.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: now[0])
    with P.progress("caching train features", total=200, every=10.0) as shown:
        for t, n in ((5, 50), (10, 50), (20, 100)):  # t=5: too soon for a line; t=10 and t=20: a line each
            now[0] = t
            shown.advance(n)
    assert lines[0] == "caching train features: 100/200 images (50 %), 10.0 images/s, about 10 s left"
    assert lines[-1] == "caching train features: 200/200 images (100 %), 10.0 images/s, done in 20 s"
    assert len(lines) == 3  # t=10, t=20, and the closing line


def test_slow_units_show_the_time_each(lines, monkeypatch):
    monkeypatch.setattr(P.sys, "stderr", io.StringIO())
    now = [0.0]
    monkeypatch.setattr(P.time, "monotonic", lambda: now[0])
    with P.progress("timing both sides", total=4, unit="rounds", every=0) as shown:
        now[0] = 120
        shown.advance()
    assert lines[0] == "timing both sides: 1/4 rounds (25 %), 2 min each, about 6 min left"


def test_nothing_under_quiet(lines, capsys):
    P.OutputOptions(quiet=True).apply()
    with P.progress("x", total=3, every=0) as shown:
        shown.advance(3)
    assert logging.getLogger("toolkit").level == logging.WARNING
    assert lines == [] and capsys.readouterr().err == ""
    P.OutputOptions(quiet=False).apply()
    with P.progress("x", total=3, every=0) as shown:
        shown.advance(3)
    assert len(lines) == 2  # every=0: a line at each advance, and the closing one


def test_a_terminal_gets_a_bar_with_an_eta(lines, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(P.sys, "stderr", err)
    with P.progress("calibrating", total=4, unit="images") as shown:
        for _ in range(4):
            shown.advance()
    text = err.getvalue()
    assert "calibrating" in text and "4/4" in text and "ETA" in text
    assert lines == []  # the bar, not lines as well


def test_the_cli_takes_quiet_on_every_config_command(capsys):
    from toolkit.cli import main

    for command in ("train", "finetune", "export", "benchmark"):
        assert main([command, "--help"]) == 0
        assert "--quiet" in capsys.readouterr().out, command
