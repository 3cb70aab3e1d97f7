"""The one headline prompt, rendered for training, evaluation and Ollama from `prompt_templates/`.

Gemma's turn format is
``<bos><start_of_turn>user\\n{instruction+article}<end_of_turn>\\n<start_of_turn>model\\n{title}<end_of_turn>``.
Training (TRL conversational prompt-completion data through the tokenizer's chat template),
evaluation (`apply_chat_template(..., add_generation_prompt=True)`) and the Ollama `TEMPLATE`
all come from the two files below, so the deployed model sees exactly the prompt it learned on.
"""

from functools import cache

from titlegen.paths import prompt_templates_dir

INSTRUCTION_FILE = "headline.zh-TW.txt"
CHAT_TEMPLATE_FILE = "gemma_chat_template.jinja"
END_OF_TURN = "<end_of_turn>"
START_OF_TURN = "<start_of_turn>"
# Strings that must never appear in a generated headline.
TEMPLATE_MARKERS = (END_OF_TURN, START_OF_TURN, "<bos>", "<eos>", "<pad>")


@cache
def instruction_template() -> str:
    """The zh-TW user-turn template with `{max_title_chars}` and `{content}` placeholders."""
    text = (prompt_templates_dir() / INSTRUCTION_FILE).read_text(encoding="utf-8").strip()
    for field in ("{content}", "{max_title_chars}"):
        if field not in text:
            raise ValueError(f"{INSTRUCTION_FILE} lacks the placeholder {field}; restore it.")
    return text


@cache
def chat_template() -> str:
    """Gemma's chat template (Jinja), set on every tokenizer titlegen trains or saves."""
    return (prompt_templates_dir() / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8").strip()


def user_message(content: str, max_title_chars: int) -> str:
    """The user turn for one article: instruction plus the cleaned article body."""
    return instruction_template().format(content=content.strip(), max_title_chars=max_title_chars)


def prompt_messages(content: str, max_title_chars: int) -> list[dict[str, str]]:
    """The conversational prompt (TRL's `prompt` column; evaluation's generation input)."""
    return [{"role": "user", "content": user_message(content, max_title_chars)}]


def completion_messages(title: str) -> list[dict[str, str]]:
    """The conversational completion (TRL's `completion` column): the title the model must write."""
    return [{"role": "assistant", "content": title.strip()}]


def generation_prompt(content: str, max_title_chars: int) -> str:
    """The prompt text without `<bos>` (which the tokenizer or llama.cpp adds), up to the model turn."""
    return f"{START_OF_TURN}user\n{user_message(content, max_title_chars)}{END_OF_TURN}\n{START_OF_TURN}model\n"


def ollama_template(max_title_chars: int) -> str:
    """The Modelfile `TEMPLATE`: the same turn text, with the article arriving as `{{ .Prompt }}`.

    Users send only the article body (`ollama run titlegen "<article>"`); llama.cpp adds `<bos>`.
    """
    instruction = instruction_template().replace("{max_title_chars}", str(max_title_chars))
    if "{{" in instruction or "}}" in instruction:
        raise ValueError(f"{INSTRUCTION_FILE} must not contain Go template braces '{{{{' or '}}}}'.")
    user = instruction.replace("{content}", "{{ .Prompt }}")
    return f"{START_OF_TURN}user\n{user}{END_OF_TURN}\n{START_OF_TURN}model\n"


def ensure_turn_tokens(tokenizer) -> None:
    """Make `<start_of_turn>`/`<end_of_turn>` single special tokens, as Gemma and llama.cpp read them.

    Gemma 3 270M's GGUF has both in its vocabulary (ids 105 and 106) but, read by transformers,
    does not register them as added tokens, so text containing them splits into characters and
    the model would train on a turn format Ollama never sends. Registering the existing vocabulary
    entries adds no new ids; a tokenizer that lacks them entirely is an error.
    """
    size = len(tokenizer)
    missing = [t for t in (START_OF_TURN, END_OF_TURN) if len(tokenizer(t, add_special_tokens=False).input_ids) != 1]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if len(tokenizer) != size:
        raise ValueError(f"The tokenizer has no vocabulary entry for {missing}: it is not a Gemma 3/3n tokenizer.")
