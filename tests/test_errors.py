"""The one rule that turns an error into a line."""

from advisor.errors import one_line


def test_one_line_takes_the_message_not_headings_or_frames():
    assert one_line(ValueError("first\nsecond")) == "first"
    assert one_line(RuntimeError("Compilation error:\n/usr/bin/ld: bad object\nCommand line: g++")) == \
        "/usr/bin/ld: bad object"
    traced = "Traceback (most recent call last):\n  File \"x.py\", line 1\nInternalError: Check failed: x > 0"
    assert one_line(RuntimeError(traced)) == "InternalError: Check failed: x > 0"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 900), limit=10) == "x" * 10
