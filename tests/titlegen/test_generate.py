"""titlegen.generate: the decoding rule (llama.cpp's repeat penalty), batch sizing and static caches."""

import pytest

torch = pytest.importorskip("torch")

from titlegen.generate import (  # noqa: E402
    LastNRepetitionPenalty,
    auto_batch_size,
    generate_titles,
    load_base,
    load_tokenizer,
    prefill_in_chunks,
    unrolled_static_cache,
)
from tests.tiny_models import greedy_with_scores, left_padded_prompts, tiny_gemma3, tiny_gemma3n  # noqa: E402


def test_repeat_penalty_is_llama_cpp_s_rule():
    # Tokens 1, 2, 3 are the last three of the context: positive logits divided, negative multiplied, once
    # per token (token 2 appears twice); token 5, outside the window, and tokens never seen are untouched.
    rule = LastNRepetitionPenalty(2.0, 3)
    ids = torch.tensor([[5, 2, 1, 2, 3]])
    scores = torch.tensor([[1.0, -1.0, 4.0, -2.0, 3.0, 7.0]])
    out = rule(ids, scores.clone())
    assert out.tolist() == [[1.0, -2.0, 2.0, -4.0, 3.0, 7.0]]


def test_penalty_one_leaves_greedy_titles_alone_and_a_penalty_changes_them(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["臺北市今天舉行記者會，說明新的交通政策。" * 4, "颱風接近，氣象署發布海上警報。" * 3]
    plain = generate_titles(model, tokenizer, articles, 20, 2, 12, repeat_penalty=1.0)
    same = generate_titles(model, tokenizer, articles, 20, 2, 12, repeat_penalty=1.4, repeat_last_n=0)  # an empty window
    assert [r["raw"] for r in plain] == [r["raw"] for r in same]
    # A random model repeats itself: a strong penalty must change what it writes.
    penalised = generate_titles(model, tokenizer, articles, 20, 2, 12, repeat_penalty=2.0)
    assert [r["raw"] for r in plain] != [r["raw"] for r in penalised]


def test_one_decoding_rule_is_the_default_of_evaluation_generation_and_the_modelfile():
    import inspect

    from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
    from titlegen.generate import GenerateConfig
    from titlegen.modelfile import ModelfileValues
    from titlegen.params import EvalParams

    rule = (REPEAT_PENALTY, REPEAT_LAST_N)
    assert rule == (1.4, 16)
    assert (EvalParams().repeat_penalty, EvalParams().repeat_last_n) == rule
    fields = GenerateConfig.model_fields
    assert (fields["repeat_penalty"].default, fields["repeat_last_n"].default) == rule
    defaults = inspect.signature(generate_titles).parameters
    assert (defaults["repeat_penalty"].default, defaults["repeat_last_n"].default) == rule
    values = ModelfileValues(source="x.gguf", max_title_chars=40)
    assert (values.repeat_penalty, values.repeat_last_n) == rule


def test_static_cache_gives_the_same_greedy_titles(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "股市收盤上漲，成交量放大。" * 2, "棒球隊贏得冠軍。"]
    dynamic = generate_titles(model, tokenizer, articles, 20, 2, 10)
    static = generate_titles(model, tokenizer, articles, 20, 2, 10, cache="static")
    assert [r["raw"] for r in dynamic] == [r["raw"] for r in static]


@pytest.mark.parametrize("kind", ["gemma3", "gemma3n"])
def test_unrolled_static_cache_keeps_the_sliding_window_by_its_mask(kind):
    # A window of 8 against 20-token left-padded prompts: the sliding layers hold every position, and the
    # mask alone must give the same decode logits as the dynamic cache's window (and not full attention's).
    model = tiny_gemma3() if kind == "gemma3" else tiny_gemma3n(sliding_window=8, vocab=300)
    ids, mask = left_padded_prompts()

    def scores(cache=None):
        return greedy_with_scores(model, ids, mask, cache)

    dynamic, dynamic_scores = scores()
    with torch.inference_mode():
        cache = unrolled_static_cache(model, 3, 40)
    assert not any(cache.is_sliding) and all(layer.max_cache_len == 40 for layer in cache.layers)
    unrolled, unrolled_scores = scores(cache)
    assert torch.equal(unrolled, dynamic)
    torch.testing.assert_close(unrolled_scores, dynamic_scores, rtol=0, atol=1e-5)
    with torch.inference_mode():
        assert unrolled_static_cache(model, 3, 32, cache) is cache  # room enough: reset and reused
        assert unrolled_static_cache(model, 2, 32, cache) is not cache  # other rows: a new one
    again, again_scores = scores(cache)
    assert torch.equal(again, dynamic)
    model.config.sliding_window = 1000  # full attention everywhere: the window was in play above
    _, full_scores = scores()
    assert (full_scores - dynamic_scores).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["gemma3", "gemma3n"])
def test_prefill_in_chunks_gives_the_whole_batch_prefill_s_titles_and_scores(kind):
    # Seven prompts of 3-20 tokens, longest first, left-padded to 20; chunks of two rows: each as wide as its longest
    # prompt (20, 14, 9, 3), with a sliding window of 8 in play and, on Gemma 3n, KV-shared layers.
    model = tiny_gemma3() if kind == "gemma3" else tiny_gemma3n(sliding_window=8, vocab=300)
    lengths, width = [20, 19, 14, 11, 9, 6, 3], 20
    mask = (torch.arange(width)[None, :] >= width - torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(3, 300, (len(lengths), width)) * mask

    whole, whole_scores = greedy_with_scores(model, ids, mask)
    with torch.inference_mode():
        cache = unrolled_static_cache(model, len(lengths), width + 12)
        prefill_in_chunks(model, ids, mask, cache, 2)
    assert int(cache.get_seq_length()) == width - 1  # generate() then feeds the last column alone
    chunked, chunked_scores = greedy_with_scores(model, ids, mask, cache)
    assert torch.equal(chunked, whole)
    torch.testing.assert_close(chunked_scores, whole_scores, rtol=0, atol=1e-5)


def test_prefill_rows_keeps_the_greedy_titles(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "股市收盤上漲，成交量放大。" * 2, "棒球隊贏得冠軍。", "颱風。"]
    dynamic = generate_titles(model, tokenizer, articles, 20, 4, 10)
    chunked = generate_titles(model, tokenizer, articles, 20, 4, 10, cache="static", prefill_rows=2)
    assert [r["raw"] for r in chunked] == [r["raw"] for r in dynamic]


def test_with_ids_returns_the_new_token_ids_that_the_title_decodes_from(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "棒球隊贏得冠軍。"]
    plain = generate_titles(model, tokenizer, articles, 20, 2, 10)
    rows = generate_titles(model, tokenizer, articles, 20, 2, 10, with_ids=True)
    assert [r["raw"] for r in rows] == [r["raw"] for r in plain] and "ids" not in plain[0]
    for row in rows:
        assert len(row["ids"]) == row["new_tokens"] and len(row["prompt_ids"]) == row["prompt_tokens"]
        body = row["ids"][:-1] if row["stopped"] else row["ids"]
        assert tokenizer.decode([t for t in body if t != tokenizer.pad_token_id], skip_special_tokens=False) == row["raw"]


def test_auto_batch_size_on_cpu_is_small_and_never_above_the_rows(tiny_gemma3_dir):
    model = load_base(str(tiny_gemma3_dir), "cpu")
    assert auto_batch_size(model, rows=3, row_bytes=None) == 3
    assert auto_batch_size(model, rows=500, row_bytes=None) == 8


GIB = 2**30


def model_seen_on_cuda(tiny_gemma3_dir, monkeypatch, free: int, reserved: int, allocated: int):
    """The tiny model, reporting a CUDA device, with PyTorch's CUDA memory figures set (no GPU needed)."""
    import torch

    model = load_base(str(tiny_gemma3_dir), "cpu")
    on_cuda = type("P", (), {"device": torch.device("cuda", 0)})()
    monkeypatch.setattr(model, "parameters", lambda: iter([on_cuda]))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (free, 141 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: reserved)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda: allocated)
    return model


def test_auto_batch_size_on_cuda_counts_memory_pytorch_holds_in_its_cache(tiny_gemma3_dir, monkeypatch):
    # An earlier, larger batch (or the base-model baseline) leaves its blocks in PyTorch's cache: free for
    # this batch, but invisible to cudaMemGetInfo. On an H200 this cut E4B batches from 352 rows to 161.
    import torch

    model = model_seen_on_cuda(tiny_gemma3_dir, monkeypatch, free=1 * GIB, reserved=41 * GIB, allocated=1 * GIB)
    with_cache = auto_batch_size(model, rows=100_000, row_bytes=100 * 2**20)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda: 1 * GIB)
    without = auto_batch_size(model, rows=100_000, row_bytes=100 * 2**20)
    assert 1 <= without < with_cache <= 512, (without, with_cache)


def test_auto_batch_size_takes_a_chunked_prefill_s_memory_off_once(tiny_gemma3_dir, monkeypatch):
    # A static batch prefilled in chunks holds one chunk's prefill whatever its size, then each row's cache and logits.
    from titlegen.generate import chunked_row_bytes, kv_bytes_per_token

    model = model_seen_on_cuda(tiny_gemma3_dir, monkeypatch, free=10 * GIB, reserved=0, allocated=0)
    row = 100 * 2**20
    assert auto_batch_size(model, rows=100_000, row_bytes=row, fixed_bytes=4 * GIB) == int((8 - 4) * GIB // row)
    assert auto_batch_size(model, rows=100_000, row_bytes=row, fixed_bytes=20 * GIB) == 1  # never below one row
    cfg = model.config.get_text_config(decoder=True)
    assert chunked_row_bytes(model, 512, 52) == kv_bytes_per_token(cfg) * 564 + cfg.vocab_size * 12


def test_auto_batch_size_runs_every_row(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    out = generate_titles(model, tokenizer, ["新聞內容。" * k for k in range(1, 12)], 20, None, 4)
    assert len(out) == 11 and all(r["new_tokens"] >= 1 for r in out)


@pytest.mark.parametrize(("rows", "max_batch", "expected"), [(500, 352, 250), (500, 512, 500), (500, 183, 167), (7, 8, 7), (1, 0, 1), (0, 5, 1)])
def test_balanced_batch_evens_out_the_batches_without_adding_one(rows, max_batch, expected):
    from titlegen.generate import balanced_batch

    assert balanced_batch(rows, max_batch) == expected


def test_auto_batch_size_on_cuda_uses_a_measured_row_size(tiny_gemma3_dir, monkeypatch):
    # The measured size decides, not the estimate from the config: Gemma 3n E4B needs ~300 MB a row at
    # 576 tokens where the estimate said ~114 MB, so an estimated batch ran out of memory (H200, 2026-11-29).
    model = model_seen_on_cuda(tiny_gemma3_dir, monkeypatch, free=100 * GIB, reserved=0, allocated=0)
    assert auto_batch_size(model, rows=500, row_bytes=300 * 2**20) == 250



def test_evaluation_decodes_with_grouped_attention_by_default_and_can_turn_it_off():
    from titlegen.generate import GenerateConfig
    from titlegen.params import EvalParams, TitlegenParams

    assert EvalParams().decode_attention == GenerateConfig.model_fields["decode_attention"].default == "grouped"
    assert TitlegenParams(preset="gpu").resolve(cuda=True).evaluation.decode_attention == "grouped"
    assert EvalParams(decode_attention="sdpa").decode_attention == "sdpa"
    assert EvalParams(decode_attention="grouped-bf16").decode_attention == "grouped-bf16"
    assert GenerateConfig.model_fields["decode_attention"].annotation == EvalParams.model_fields["decode_attention"].annotation
    with pytest.raises(ValueError):
        EvalParams(decode_attention="flash")


def test_the_static_cache_compiles_gemma3n_with_cuda_graphs_and_gemma3_with_inductor():
    # Inductor never finished compiling E4B's decode step in 560 s on an H200; CUDA graphs record in about a minute.
    from tests.tiny_models import tiny_gemma3, tiny_gemma3n
    from titlegen.generate import static_compile_backend

    assert static_compile_backend(tiny_gemma3n()) == "cudagraphs"
    assert static_compile_backend(tiny_gemma3()) == "inductor"


def test_prefill_rows_for_takes_smaller_chunks_for_gemma3n(tiny_gemma3_dir):
    from types import SimpleNamespace

    from titlegen.generate import PREFILL_ROWS, PREFILL_ROWS_GEMMA3N, prefill_rows_for

    assert prefill_rows_for(load_base(str(tiny_gemma3_dir), "cpu")) == PREFILL_ROWS
    assert prefill_rows_for(SimpleNamespace(config=SimpleNamespace(model_type="gemma3n"))) == PREFILL_ROWS_GEMMA3N < PREFILL_ROWS


def test_a_title_stop_cuts_the_title_where_its_token_writes_it(tiny_gemma3_dir, monkeypatch):
    # As Ollama does with a stop string: the text before it is kept, the title counts as stopped, and `new_tokens`
    # (with `ids`) ends at the token that wrote it. The tiny model writes no line break, so a character it does write
    # stands in for the stop.
    import titlegen.generate as generate

    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "棒球隊贏得冠軍。"]
    monkeypatch.setattr(generate, "TITLE_STOPS", ())
    whole = generate_titles(model, tokenizer, articles, 20, 2, 10, with_ids=True)
    row = max(whole, key=lambda r: len(r["raw"].strip()))
    stop = row["raw"].strip()[len(row["raw"].strip()) // 2]
    monkeypatch.setattr(generate, "TITLE_STOPS", (stop,))
    cut = generate_titles(model, tokenizer, articles, 20, 2, 10, with_ids=True)[whole.index(row)]
    assert cut["raw"] == row["raw"][: row["raw"].index(stop)] and cut["stopped"]
    assert cut["ids"] == row["ids"][: cut["new_tokens"]]
    assert stop in tokenizer.decode(cut["ids"], skip_special_tokens=False)
    assert stop not in tokenizer.decode(cut["ids"][:-1], skip_special_tokens=False)
