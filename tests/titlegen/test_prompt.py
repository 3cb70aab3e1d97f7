"""Training, evaluation and Ollama render the same prompt, token for token, with the real Gemma tokenizer.

* training: `titlegen.train_worker.tokenize_example` (what the worker feeds TRL) and TRL's own
  tokenization of the same conversational prompt-completion row, which must agree;
* evaluation: `apply_chat_template(prompt_messages(...), add_generation_prompt=True)`;
* Ollama: the Modelfile `TEMPLATE` (`ollama_template`) with the article as `.Prompt`, tokenized
  as llama.cpp does (one `<bos>` added in front).
"""

import pytest

from titlegen.prompt import END_OF_TURN, completion_messages, ollama_template, prompt_messages, user_message

ARTICLE = "行政院今天通過明年度中央政府總預算案，總歲出規模創下新高，其中社福與國防經費增幅最大。\n將送立法院審議。"
TITLE = "明年度總預算歲出創新高 社福國防增幅最大"
N = 40


@pytest.fixture(scope="module")
def tokenizer(gemma_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_tokenizer_dir)


def _ids(x):
    return list(x["input_ids"] if hasattr(x, "keys") else x)


def ollama_render(content: str) -> str:
    """What Ollama's Go template produces for `ollama run titlegen "<content>"`."""
    template = ollama_template(N)
    assert template.count("{{ .Prompt }}") == 1
    return template.replace("{{ .Prompt }}", content)


@pytest.fixture(scope="module")
def llama_cpp_bos(gemma270m_gguf) -> list[int]:
    """The BOS llama.cpp puts in front of a prompt, read from the GGUF's own metadata."""
    from gguf import GGUFReader

    fields = GGUFReader(gemma270m_gguf).fields

    def value(key):
        f = fields[key]
        return f.parts[f.data[0]].tolist()[0]

    return [value("tokenizer.ggml.bos_token_id")] if value("tokenizer.ggml.add_bos_token") else []


def test_three_renderings_agree_token_for_token(tokenizer, llama_cpp_bos):
    from titlegen.train_worker import tokenize_example

    train = tokenize_example(tokenizer, ARTICLE, TITLE, N)
    prompt_len = train["completion_mask"].index(1)
    train_prompt = train["input_ids"][:prompt_len]

    evaluation = _ids(tokenizer.apply_chat_template(prompt_messages(ARTICLE, N), tokenize=True, add_generation_prompt=True))
    # llama.cpp tokenizes the rendered template (special tokens parsed) and puts the GGUF's BOS in front.
    ollama = llama_cpp_bos + tokenizer(ollama_render(ARTICLE.strip()), add_special_tokens=False)["input_ids"]

    assert train_prompt == evaluation == ollama
    assert evaluation[0] == tokenizer.bos_token_id and evaluation.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(evaluation).endswith("<start_of_turn>model\n")


def test_completion_is_title_then_end_of_turn(tokenizer):
    from titlegen.train_worker import tokenize_example

    row = tokenize_example(tokenizer, ARTICLE, TITLE, N)
    completion = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
    assert tokenizer.decode(completion) == f"{TITLE}{END_OF_TURN}\n"
    assert tokenizer.convert_tokens_to_ids(END_OF_TURN) in completion


def test_trl_tokenization_matches_worker(tokenizer, tiny_gemma3_dir, tmp_path):
    """TRL's SFTTrainer, given the raw conversational row, builds the same ids and completion mask."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from titlegen.train_worker import tokenize_example

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3_dir)
    ds = Dataset.from_list([{"prompt": prompt_messages(ARTICLE, N), "completion": completion_messages(TITLE)}])
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=1024, dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    trl_row = trainer.train_dataset[0]
    ours = tokenize_example(tokenizer, ARTICLE, TITLE, N)
    assert trl_row["input_ids"] == ours["input_ids"]
    # TRL folds the completion mask into the labels (-100 = no loss) and drops the mask column.
    assert trl_row["labels"] == [t if m else -100 for t, m in zip(ours["input_ids"], ours["completion_mask"])]


def test_user_message_carries_limit_and_article():
    text = user_message(ARTICLE, N)
    assert str(N) in text and ARTICLE.strip() in text
    assert "{{" not in ollama_template(N).replace("{{ .Prompt }}", "")
