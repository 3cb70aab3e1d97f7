"""The training rows of the fine-tune worker: split JSONL -> tokenized prompt-completion rows.

Each row is rendered with `titlegen.prompt` (the prompt shared with evaluation and Ollama) and
tokenized here, one process, a few ms a row, rather than in TRL: the article is cut at the prompt's
end so that the title (the only part with loss) always fits `max_seq_length`, and Unsloth's
multi-process tokenization (minutes on the GPU machine) is never started. TRL treats a dataset with
`input_ids` as already processed and builds the labels from `completion_mask`.
"""

from titlegen.records import TrainWorkerConfig


def field_names(row: dict, config: TrainWorkerConfig) -> tuple[str, str]:
    """Which keys of a split row hold the article and the title."""
    if config.input_key and config.target_key:
        return config.input_key, config.target_key
    for pair in (("input", "target"), ("content", "title")):
        if all(k in row for k in pair):
            return pair
    raise SystemExit(f"split rows need keys input/target or content/title; found {sorted(row)}")


def _ids(encoded) -> list[int]:
    """Token ids from `apply_chat_template(tokenize=True)`, which returns a list or a BatchEncoding."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def tokenize_example(tokenizer, content: str, title: str, max_title_chars: int) -> dict:
    """`input_ids` + `completion_mask` of one row, exactly as TRL builds them for prompt-completion data.

    The prompt is rendered with `add_generation_prompt=True` (what evaluation and Ollama feed the
    model); the completion is what follows it in the full conversation: the title, `<end_of_turn>`
    and the template's newline. Only completion tokens carry loss.
    """
    from titlegen.prompt import completion_messages, prompt_messages

    prompt = prompt_messages(content, max_title_chars)
    prompt_ids = _ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))
    full_ids = _ids(tokenizer.apply_chat_template(prompt + completion_messages(title), tokenize=True))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise SystemExit("the chat template renders the prompt differently alone and before the title; fix prompt_templates/")
    return {"input_ids": full_ids, "completion_mask": [0] * len(prompt_ids) + [1] * (len(full_ids) - len(prompt_ids))}


def fit_content(tokenizer, content: str, title: str, max_title_chars: int, max_len: int) -> dict:
    """The tokenized row, its article cut from the end so prompt + title + `<end_of_turn>` fit `max_len`.

    TRL would otherwise truncate from the right and cut the title, the only part with loss.
    """
    row = tokenize_example(tokenizer, content, title, max_title_chars)
    if len(row["input_ids"]) <= max_len:
        return row
    budget = max_len - len(tokenize_example(tokenizer, "", title, max_title_chars)["input_ids"])
    if budget < 16:
        raise SystemExit(f"max_seq_length={max_len} leaves {budget} tokens for the article; raise train.max_seq_length.")
    ids = tokenizer(content, add_special_tokens=False)["input_ids"]
    while budget > 0:
        row = tokenize_example(tokenizer, tokenizer.decode(ids[:budget]).rstrip("\ufffd"), title, max_title_chars)
        if len(row["input_ids"]) <= max_len:
            return row
        budget -= 4
    raise SystemExit("could not fit an article into max_seq_length")


def build_dataset(path: str, tokenizer, config: TrainWorkerConfig, limit: int | None = None, augment: bool = False):
    """A tokenized `datasets.Dataset` (`input_ids`, `completion_mask`) from a split JSONL file.

    Tokenizing here (one process, a few ms a row) rather than in TRL keeps the article cut at
    the prompt's end and avoids the multi-process tokenization Unsloth switches on, which took
    minutes on the GPU machine. TRL treats a dataset with `input_ids` as already processed and
    builds the labels from `completion_mask` (`completion_only_loss=True`).
    """
    from datasets import Dataset

    from titlegen.runs import read_jsonl

    rows = read_jsonl(path)[:limit] if limit else read_jsonl(path)
    if not rows:
        raise SystemExit(f"{path} has no rows")
    in_key, out_key = field_names(rows[0], config)
    n = config.max_title_chars
    max_len = config.train.max_seq_length
    pairs = [(r[in_key], r[out_key]) for r in rows]
    if augment and config.train.augmentation == "lead":
        lead_chars = config.train.lead_chars
        pairs += [(lead_view(content, lead_chars), title) for content, title in pairs]
    return Dataset.from_list([fit_content(tokenizer, content, title, n, max_len) for content, title in pairs])


def lead_view(content: str, chars: int) -> str:
    """The article's first `chars` characters, cut after the last sentence end inside them (if any)."""
    head = content[:chars]
    ends = [head.rfind(mark) for mark in "。！？!?"]
    cut = max(ends)
    return head[: cut + 1] if cut >= chars // 3 else head
