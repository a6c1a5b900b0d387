"""parse_grid against numpy.logspace/linspace; sorting, duplicates and every error."""

import numpy as np
import pytest

from regulab.sweep.grid import format_grid, parse_grid


@pytest.mark.parametrize(
    "text, reference",
    [
        ("logspace(-3,2,32)", np.logspace(-3, 2, 32)),
        ("logspace(-3, 2, 1)", np.logspace(-3, 2, 1)),
        ("logspace(2,-1,4)", np.logspace(2, -1, 4)),
        ("linspace(0,1,11)", np.linspace(0, 1, 11)),
        ("linspace(0.5, 2.5, 5)", np.linspace(0.5, 2.5, 5)),
    ],
)
def test_functions_match_numpy(text, reference):
    np.testing.assert_allclose(parse_grid(text), np.sort(reference), rtol=1e-12, atol=0)


def test_logspace_matches_a_python_loop():
    expected = [10 ** (-3 + 5 * i / 31) for i in range(32)]
    np.testing.assert_allclose(parse_grid("logspace(-3,2,32)"), expected, rtol=1e-12)


def test_numbers_mixed_with_functions_are_sorted_and_deduplicated():
    got = parse_grid(" 1e-3 , 0, .5, logspace(-3,0,4), 10, 0")
    assert got == [0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 10.0]
    assert all(type(v) is float for v in got)


def test_negative_zero_becomes_zero():
    got = parse_grid("-0, 0")
    assert got == [0.0] and str(got[0]) == "0.0"


def test_list_and_tuple_and_array_inputs():
    assert parse_grid([1, 0, 0.1, 1]) == [0.0, 0.1, 1.0]
    assert parse_grid((2.0, np.float32(0.5))) == [0.5, 2.0]
    assert parse_grid(np.array([3.0, 1.0])) == [1.0, 3.0]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "the grid is empty"),
        ("   ", "the grid is empty"),
        ("1,,2", "item 2 is empty"),
        ("1,2,", "item 3 is empty"),
        ("geomspace(1,2,3)", "unknown function 'geomspace'"),
        ("logspace(1,2)", "logspace takes 3 arguments"),
        ("linspace(0,1,2,3)", "linspace takes 3 arguments"),
        ("logspace(1,,3)", "an argument of 'logspace\\(1,,3\\)' is empty"),
        ("logspace(-3,2,3.5)", "n must be an integer >= 1"),
        ("logspace(-3,2,0)", "n must be an integer >= 1"),
        ("linspace(0,1,-2)", "n must be an integer >= 1"),
        ("-1", "strengths must be >= 0"),
        ("0,linspace(-1,1,3)", "strengths must be >= 0"),
        ("nan", "strengths must be finite"),
        ("0,inf", "strengths must be finite"),
        ("logspace(1,400,2)", "strengths must be finite"),
        ("abc", "'abc' is not a number"),
        ("1 2", "'1 2' is not a number"),
        ("logspace(a,2,3)", "'a' is not a number"),
        ("logspace(1,2,3", "'\\(' is not closed"),
        ("1)", "'\\)' has no matching"),
        ("__import__('os')", "unknown function '__import__'"),
    ],
)
def test_errors_name_the_parameter_say_what_is_allowed_and_quote_the_input(text, problem):
    with pytest.raises(ValueError, match=problem) as err:
        parse_grid(text, name="--grid")
    message = str(err.value)
    assert message.startswith("--grid must be comma-separated strengths >= 0")
    assert "logspace(a,b,n)" in message and "linspace(a,b,n)" in message
    assert f"got {text!r}" in message


def test_errors_use_the_given_name():
    with pytest.raises(ValueError, match=r"^sweep\.grid must be .*got '-2'"):
        parse_grid("-2", name="sweep.grid")


@pytest.mark.parametrize(
    "values, problem",
    [
        ([], "the grid is empty"),
        ([0.1, -1], "strengths must be >= 0"),
        ([float("nan")], "strengths must be finite"),
        ([True], "True is not a number"),
        (["1"], "'1' is not a number"),
    ],
)
def test_list_errors(values, problem):
    with pytest.raises(ValueError, match=problem) as err:
        parse_grid(values, name="grid")
    assert str(err.value).startswith("grid must be") and f"got {values!r}" in str(err.value)


def test_other_types_are_refused():
    with pytest.raises(ValueError, match="expected a string or a list of numbers, not int"):
        parse_grid(3)


def test_format_grid():
    assert format_grid(parse_grid("0,logspace(-3,2,32)")) == (
        "0 and 32 log-spaced values from 0.001 to 100"
    )
    assert format_grid(parse_grid("linspace(0,1,11)")) == "11 evenly spaced values from 0 to 1"
    assert format_grid(parse_grid("1,2,3,4,5,7,9")) == "7 values from 1 to 9"
    assert format_grid([0, 0.1, 1]) == "0, 0.1, 1"
