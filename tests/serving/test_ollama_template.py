"""The rendered Modelfile on a real Ollama server builds exactly the training/evaluation prompt."""

from pathlib import Path

import pytest

from titlegen.modelfile import ModelfileValues, render_modelfile
from titlegen.prompt import generation_prompt
from titlegen.ollama_client import OllamaClient, create_form, create_request

ARTICLE = "臺北市今天舉行跨年晚會，吸引數萬民眾到場，市府加開捷運班次疏運人潮。"
MODEL = "titlegen-template-test:latest"
# Same weights, TEMPLATE passing the prompt through untouched: it shows how llama.cpp tokenizes a text.
PLAIN = "titlegen-template-plain:latest"
PLAIN_MODELFILE = 'FROM ${FROM}\nTEMPLATE """{{ .Prompt }}"""\nPARAMETER stop "<end_of_turn>"\nPARAMETER temperature 0\n'


@pytest.fixture(scope="module")
def served(ollama_host, gemma270m_gguf):
    api = OllamaClient(ollama_host)
    values = ModelfileValues(source=str(gemma270m_gguf), max_title_chars=40)
    form = create_form(api.version())
    digest = api.push_blob(Path(gemma270m_gguf))
    api.create(create_request(form, MODEL, render_modelfile(values), digest, None))
    api.create(create_request(form, PLAIN, render_modelfile(values, template_text=PLAIN_MODELFILE), digest, None))
    yield api
    api.delete(MODEL)
    api.delete(PLAIN)
    api.close()


def _generate(api: OllamaClient, prompt: str, model: str = MODEL, raw: bool = False) -> dict:
    return api.generate(model, prompt, raw=raw, options={"num_predict": 2})


def _prompt_ids(answer: dict) -> list[int]:
    """`context` is the prompt's token ids (without <bos>) followed by the generated ones."""
    return answer["context"][: len(answer["context"]) - answer["eval_count"]]


@pytest.mark.ollama
def test_template_prompt_equals_training_prompt(served):
    # The article through our TEMPLATE and generation_prompt's text through a pass-through
    # TEMPLATE must reach the model as the very same token ids.
    templated = _generate(served, ARTICLE)
    plain = _generate(served, generation_prompt(ARTICLE, 40), model=PLAIN)
    assert _prompt_ids(templated) == _prompt_ids(plain)
    assert templated["prompt_eval_count"] == plain["prompt_eval_count"] == len(_prompt_ids(plain)) + 1  # + <bos>
    # raw=True (no template at all) agrees too, and a doubled <bos> is visible, so the check can fail.
    raw = _generate(served, generation_prompt(ARTICLE, 40), raw=True)
    assert raw["prompt_eval_count"] == templated["prompt_eval_count"]
    doubled = _generate(served, "<bos>" + generation_prompt(ARTICLE, 40), raw=True)
    assert doubled["prompt_eval_count"] == raw["prompt_eval_count"] + 1


@pytest.mark.ollama
def test_turn_markers_are_single_control_tokens(served):
    ids = _prompt_ids(_generate(served, ARTICLE))
    assert ids[:3] == [105, 2364, 107]  # <start_of_turn> user \n
    assert ids[-3:] == [105, 4368, 107]  # <start_of_turn> model \n
    assert ids.count(106) == 1  # <end_of_turn> closes the user turn


@pytest.mark.ollama
def test_hf_tokenizer_matches_ollama_tokens(served, gemma_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma_tokenizer_dir)
    ids = tok(generation_prompt(ARTICLE, 40), add_special_tokens=False)["input_ids"]
    assert _prompt_ids(_generate(served, ARTICLE)) == ids
