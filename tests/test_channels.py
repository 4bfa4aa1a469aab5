import pytest

from advisor.cli.options import parse_channels
from advisor.errors import AdvisorError


def test_range_with_default_step_ends_on_stop():
    assert parse_channels("32..256") == [32, 64, 96, 128, 160, 192, 224, 256]
    assert parse_channels("10..50") == [10, 42, 50]


def test_range_with_step_and_list():
    assert parse_channels("8..16:4") == [8, 12, 16]
    assert parse_channels(" 64, 48,48,96") == [48, 64, 96]
    assert parse_channels("7..7") == [7]


@pytest.mark.parametrize("spec, words", [
    ("abc", "malformed"), ("32..", "malformed"), ("", "malformed"), ("32..256:x", "malformed"),
    ("256..32", "reversed"), ("32..256:0", "step"), ("0..32", "at least 1"), ("-8..8", "at least 1"),
    ("0", "at least 1"),
])
def test_bad_ranges_are_refused_with_reason(spec, words):
    with pytest.raises(AdvisorError, match=words):
        parse_channels(spec)
