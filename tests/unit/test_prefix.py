import pytest

from trapo.prefix import break_ends_from_offsets, cut_index


def test_ratio_zero_and_one():
    assert cut_index(100, 0.0, [10, 50]) == 0
    assert cut_index(100, 1.0, [10, 50]) == 100


def test_snaps_forward_to_next_break_within_window():
    # L*len = 25; next break ends at 40 < (0.25+0.3)*100 = 55 -> snap to 40
    assert cut_index(100, 0.25, [10, 40, 70]) == 40


def test_no_snap_when_break_is_too_far():
    # next break after 25 is 60 >= 55 -> cut at 25 tokens
    assert cut_index(100, 0.25, [10, 60]) == 25


def test_break_exactly_at_cut_and_no_breaks():
    assert cut_index(100, 0.5, [50]) == 50
    assert cut_index(100, 0.5, []) == 50
    assert cut_index(7, 0.5, []) == 3  # floor


def test_negative_ratio_rejected():
    with pytest.raises(ValueError):
        cut_index(10, -0.1)


def test_break_ends_from_char_offsets():
    text = "a+b=c\n\nc*2=d\n\n\\boxed{d}"
    offsets = [(i, i + 1) for i in range(len(text))]  # a character tokenizer
    assert break_ends_from_offsets(text, offsets) == [7, 14]
    assert text[:7].endswith("\n\n")


def test_break_ends_with_multichar_tokens():
    text = "x=1.\n\ny=2.\n\nz"
    # tokens: "x=1" ".\n\n" "y=2" ".\n\n" "z"
    offsets = [(0, 3), (3, 6), (6, 9), (9, 12), (12, 13)]
    assert break_ends_from_offsets(text, offsets) == [2, 4]
