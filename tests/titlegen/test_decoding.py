"""titlegen.decoding: a stop string cuts the text already generated."""

from titlegen.decoding import cut_at_stop


def test_cut_at_the_earliest_of_several_stop_strings():
    assert cut_at_stop("颱風來襲\n標題：颱風。", ["標題", "\n"]) == ("颱風來襲", True)
    assert cut_at_stop("颱風來襲。標題\n", ["\n", "標題"]) == ("颱風來襲。", True)


def test_a_stop_at_position_zero_leaves_nothing():
    assert cut_at_stop("\n颱風來襲", ["\n"]) == ("", True)


def test_no_stop_string_found_keeps_the_text_unstopped():
    assert cut_at_stop("颱風來襲", ["\n", "標題"]) == ("颱風來襲", False)
    assert cut_at_stop("颱風來襲", []) == ("颱風來襲", False)
    assert cut_at_stop("颱風來襲", [""]) == ("颱風來襲", False)
