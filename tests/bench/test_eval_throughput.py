"""bench/eval_throughput.py: how a variant's titles are compared with the first variant's (near-ties, #14)."""

import copy

import pytest

torch = pytest.importorskip("torch")

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY  # noqa: E402
from titlegen.generate import LastNRepetitionPenalty, generate_titles, load_base, load_tokenizer  # noqa: E402
from tests.conftest import bench_module  # noqa: E402

eval_throughput = bench_module("eval_throughput")


@pytest.fixture(scope="module")
def titled(tiny_gemma3_dir):
    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "棒球隊贏得冠軍。" * 3]
    return model, generate_titles(model, tokenizer, articles, 20, 2, 8, with_ids=True)


def test_equal_titles_are_counted_equal_and_never_judged(titled):
    model, rows = titled
    found = eval_throughput.compare_titles(("auto-dynamic", rows), copy.deepcopy(rows), model, 0.5)
    assert (found["equal"], found["of"], found["near_ties"], found["mismatches"], found["differing"]) == (2, 2, 0, 0, [])


def test_a_difference_is_judged_by_the_reference_model_s_logits_of_the_two_tokens(titled):
    model, rows = titled
    step = 2
    changed = copy.deepcopy(rows)
    other_token = (rows[0]["ids"][step] + 7) % model.config.vocab_size
    changed[0]["ids"] = rows[0]["ids"][:step] + [other_token] + rows[0]["ids"][step + 1 :]
    # The margin is the reference model's own: the prompt and the shared tokens, one row, the default penalty.
    ids = torch.tensor([rows[0]["prompt_ids"] + rows[0]["ids"][:step]])
    with torch.inference_mode():
        logits = LastNRepetitionPenalty(REPEAT_PENALTY, REPEAT_LAST_N)(ids, model(input_ids=ids).logits[:, -1].float())[0]
    expected = float(logits[rows[0]["ids"][step]] - logits[other_token])
    strict = eval_throughput.compare_titles(("auto-dynamic", rows), changed, model, 0.0)
    assert (strict["equal"], strict["near_ties"], strict["mismatches"]) == (1, 0, 1)
    assert strict["differing"][0]["step"] == step and strict["differing"][0]["margin"] == pytest.approx(expected, abs=1e-3)
    # The greedy token won at that step, so the margin is positive; within a wide enough limit it is a near-tie.
    assert expected > 0
    lenient = eval_throughput.compare_titles(("auto-dynamic", rows), changed, model, expected + 1)
    assert (lenient["near_ties"], lenient["mismatches"]) == (1, 0)


def test_the_kernel_table_lists_gpu_kernels_only_longest_first_with_their_full_names():
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    long_name = "void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<direct_copy_kernel_cuda>>"
    events = [
        SimpleNamespace(device_type=DeviceType.CPU, self_device_time_total=0, count=9, key="aten::copy_"),
        SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=1_000, count=10, key="small_gemm"),
        SimpleNamespace(device_type=DeviceType.CUDA, self_device_time_total=3_000, count=2, key=long_name),
    ]
    lines = eval_throughput.kernel_table(SimpleNamespace(key_averages=lambda: events)).splitlines()
    assert lines[0] == "GPU kernels by total time (2 kinds, 0.004 s in all)"
    assert lines[2].split()[:4] == ["75.0%", "3.0", "2", "1500.0"] and lines[2].endswith(long_name)
    assert lines[3].split()[:4] == ["25.0%", "1.0", "10", "100.0"] and lines[3].endswith("small_gemm")
    assert len(lines) == 4


def test_the_product_table_groups_matrix_products_by_shape_with_their_achieved_rate():
    from types import SimpleNamespace

    import torch
    from torch.profiler import ProfilerActivity, profile

    # A real (CPU) profile: each product is listed once per shape, with its calls, and nothing else is.
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        for _ in range(3):
            torch.mm(a, b)
        torch.bmm(a[None], b[None])
        torch.relu(a)
    lines = eval_throughput.product_table(prof).splitlines()
    assert lines[0] == "Matrix products by input shapes (2 kinds; eager operators only)"
    listed = {line.split()[4]: line for line in lines[2:]}
    assert set(listed) == {"aten::mm", "aten::bmm"}
    assert listed["aten::mm"].split()[1] == "3" and "[[8, 16], [16, 4]]" in listed["aten::mm"]
    # The achieved rate: FLOPs over GPU time (a product of 2 * 256 * 4096 * 4096 FLOPs in 100 us: 85.9 TFLOP/s).
    gemm = SimpleNamespace(key="aten::mm", device_time_total=100.0, count=1, flops=2 * 256 * 4096 * 4096, input_shapes=[[256, 4096], [4096, 4096]])
    fake = SimpleNamespace(key_averages=lambda group_by_input_shape: [gemm])
    assert eval_throughput.product_table(fake).splitlines()[2].split()[:4] == ["0.1", "1", "100.0", "85.9"]


def test_cache_writes_in_graph_switches_the_cudagraphs_backend_s_mutation_rules_only_while_active():
    import torch._dynamo.config as dynamo_config

    names = ("cudagraph_backend_keep_input_mutation", "cudagraph_backend_support_input_mutation")
    before = [getattr(dynamo_config, n) for n in names]
    with eval_throughput.cache_writes_in_graph():
        assert [getattr(dynamo_config, n) for n in names] == [True, True]
    assert [getattr(dynamo_config, n) for n in names] == before
