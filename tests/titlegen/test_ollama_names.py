"""`validate_model_name` (the one check of `ollama_model`; the parameters model calls it) and the tags of a run."""

import pytest

from titlegen.ollama_names import MAX_PART, MAX_TAG, run_tags, validate_model_name


@pytest.mark.parametrize("name", ["titlegen", "acme/tg:prod", "registry.example.com/acme/tg:v1.2", "TG_2:rc-1", "_x", "tg:" + "a" * MAX_TAG])
def test_valid_names_pass_unchanged(name):
    assert validate_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("bad name", "holds ' '"),
        ("tg\nSYSTEM x", "holds '\\n "),
        ("tg:prod\r", "holds '\\r'"),
        ("../../tmp/x", "misplaced or start with '.' or '-'"),
        ("-tg", "misplaced"),
        ("a/b/c/d", "misplaced"),
        ("tg:a:b", "misplaced"),
        ("a..b", "holds '..'"),
        ("acme.io/tg", "namespace 'acme.io' holds '.'"),
        ("x" * 81, "longer than 80 characters"),
        ("tg:" + "a" * (MAX_TAG + 1), f"at most {MAX_TAG}"),
        ("tg:candidate", "candidate/rollback tags"),
        ("tg:candidate-0123456789ab", "candidate/rollback tags"),
        ("tg:prod-rollback-0123456789ab", "candidate/rollback tags"),
        ("tg:prod-candidate", "candidate/rollback tags"),
    ],
)
def test_invalid_names_say_what_and_how(name, problem):
    with pytest.raises(ValueError) as err:
        validate_model_name(name)
    message = str(err.value)
    assert problem in message
    assert "e.g. 'titlegen' or 'acme/titlegen:prod'" in message


def test_tags_that_merely_contain_the_word_are_fine():
    assert validate_model_name("tg:candidates") == "tg:candidates"
    assert validate_model_name("tg:prerollback") == "tg:prerollback"


def test_run_tags_are_per_run():
    a, b = run_tags("titlegen", "flow-run-a"), run_tags("titlegen", "flow-run-b")
    assert a.serving == b.serving == "titlegen:latest"
    assert a.candidate == f"titlegen:candidate-{a.run_id}" and a.rollback == f"titlegen:rollback-{a.run_id}"
    assert a.candidate != b.candidate and a.rollback != b.rollback
    assert run_tags("titlegen", "flow-run-a") == a  # a retried task reuses its own tags
    assert run_tags("titlegen").run_id != run_tags("titlegen").run_id  # no run id: random
    tagged = run_tags("acme/tg:prod", "x")
    assert (tagged.serving, tagged.candidate) == ("acme/tg:prod", f"acme/tg:prod-candidate-{tagged.run_id}")


def test_run_tags_of_the_longest_valid_tag_are_valid_ollama_tags():
    tags = run_tags("tg:" + "a" * MAX_TAG, "x")
    assert len(tags.candidate.split(":")[1]) == MAX_PART
    with pytest.raises(ValueError, match="not a valid Ollama model name"):
        run_tags("bad name")
