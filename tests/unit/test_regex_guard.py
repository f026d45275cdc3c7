"""The safe regex subset: what labs write passes unchanged; backreferences, lookaround,
huge or nested counts, unbalanced brackets and overlong patterns are refused, naming why."""

from __future__ import annotations

import pytest

from matengine.errors import InvalidInput
from matengine.query.regex_guard import check_regex


@pytest.mark.parametrize(
    "pattern",
    [
        "abc",
        "^pre",
        "post$",
        "(ab|cd)+x",
        "[[:alpha:]]+",
        "a{3}b{2,5}",
        r"\d+\.\w*",
        "(?:ab)*?c",
        "[]a]",
        "",
        "x{100}",
    ],
)
def test_ordinary_patterns_pass_unchanged(pattern):
    assert check_regex(pattern, max_length=256, where="w") == pattern


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "backreferences"),
        (r"(a*)*(a*)*\1\2b", "backreferences"),
        ("([", "never closed"),
        ("(a", "never closed"),
        (")", "closes no group"),
        ("a{1000}{1000}", "repetition counts above 100"),
        ("a{101}", "repetition counts above 100"),
        ("a{5,2}", "is not a repetition"),
        ("a{x}", "is not a repetition"),
        ("a**", "a quantifier follows another"),
        ("a{2}{3}", "a quantifier follows another"),
        ("(a{50}){50}", "unroll to more than 1000 states"),
        ("(?=a)", "no lookaround"),
        ("(?i)a", "no lookaround, no options"),
        ("***:a", "directors"),
        ("*a", "has nothing to repeat"),
        (r"\q", "unknown escape"),
        ("a\\", "ends with"),
        ("x" * 257, "longer than 256 characters"),
    ],
)
def test_dangerous_or_broken_patterns_are_refused(pattern, why):
    with pytest.raises(InvalidInput, match=why) as info:
        check_regex(pattern, max_length=256, where="filter_regex_dict['tag']")
    assert "filter_regex_dict['tag']" in str(info.value)
