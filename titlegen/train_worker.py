"""The training child process: `python -m titlegen.train_worker CONFIG.json`.

`tasks/finetune.py` writes CONFIG.json and runs this module in a subprocess, so CUDA memory is
freed when training ends and Unsloth is imported before transformers, TRL and PEFT (its patches
are lost otherwise). It is also usable on its own; the config keys are documented in
`docs/finetune.md` and built by `titlegen.tasks.finetune.worker_config`.

Engines:

* `unsloth` (default on CUDA): `FastModel.from_pretrained` (4-bit QLoRA or 16-bit LoRA) and
  `FastModel.get_peft_model` on the language layers only, Unsloth's Gemma 3n recipe.
* `transformers` (default on CPU, and the baseline of `bench/train_throughput.py`): plain
  transformers + PEFT with LoRA on the language model's projections (bitsandbytes 4-bit on CUDA
  when asked). Unsloth is not used on CPU because installing it there replaces torch's companions
  (torchvision, triton, xformers) and downgrades `datasets`.

Both train with TRL's `SFTTrainer` on a conversational prompt-completion dataset built by
`titlegen.prompt`, so the loss covers the title and its closing `<end_of_turn>` only. Validation
loss is computed each epoch (and once at the end when `max_steps` stops training mid-epoch); the
adapter of the best validation loss is the one written out. Checkpoints are saved every
`checkpoint_steps` optimizer steps into `checkpoint_dir` and training resumes from the newest one.

Rows come from `titlegen.train_data`, progress lines and the best-adapter callback from
`titlegen.train_progress`.
"""

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from titlegen.prompt import END_OF_TURN
from titlegen.records import TrainWorkerConfig, WorkerResult
# Re-exported: the parent process and the tests import them from here.
from titlegen.train_data import build_dataset, field_names, fit_content, lead_view, tokenize_example  # noqa: F401
from titlegen.train_progress import BEST_DIR, FAILED_CHECKS, PROGRESS_PREFIX, emit, eval_rank, make_callback, memory_split, parse_progress, steady_rate  # noqa: F401

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# PEFT full-match regex: the projections of the language model only, never a vision or audio tower.
LANGUAGE_TARGET_REGEX = r"^(?!.*(vision|audio)).*\.(" + "|".join(LORA_TARGETS) + r")$"
# train.gradient_checkpointing=None: on from this many parameters (and always on CPU). Below, a batch's
# activations fit easily (Gemma 3 270M at batch 8: 4.9 GiB) and recomputing them cost 40 % of the speed.
CHECKPOINTING_MIN_PARAMS = 1_000_000_000
# train.unsloth_compile=None under 4-bit QLoRA: on below this many parameters. One H200, 2026-11-30 (docs/finetune.md
# "Thirteenth lease"): Gemma 3 270M QLoRA at batch 16 compiled 47,282 against 36,393 tokens/s eager, first step 32 s, and
# ten seeds of the chosen config as good compiled as eager; E4B QLoRA compiled waits 71-277 s for its first step and
# recompiles 100-250 s at every new batch shape, so a whole run is slower than eager.
COMPILE_QLORA_MAX_PARAMS = 1_000_000_000
STEP_RECORD = 240  # steps whose seconds and tokens worker_result.json lists (the bench reads them)



def choose_engine(config: TrainWorkerConfig, cuda: bool) -> str:
    engine = config.train.engine
    if engine == "auto":
        return "unsloth" if cuda else "transformers"
    if engine == "unsloth" and not cuda:
        raise SystemExit("train.engine='unsloth' needs a CUDA GPU here; use engine='auto' or 'transformers' on CPU.")
    return engine


def use_checkpointing(config: TrainWorkerConfig, model, cuda: bool) -> bool:
    """train.gradient_checkpointing, with None resolved by the model's size (see CHECKPOINTING_MIN_PARAMS)."""
    if config.train.gradient_checkpointing is not None:
        return config.train.gradient_checkpointing
    return not cuda or sum(p.numel() for p in model.parameters()) >= CHECKPOINTING_MIN_PARAMS


def use_unsloth_compile(config: TrainWorkerConfig, parameters: int | None = None) -> bool:
    """train.unsloth_compile, with None = on for 16-bit LoRA and for 4-bit QLoRA of a base under
    `COMPILE_QLORA_MAX_PARAMS` parameters, off for larger (or unsized) 4-bit bases (docs/finetune.md "Speed").
    `parameters`: the base's size; None = read from its safetensors headers (`titlegen.disk.checkpoint_parameters`)."""
    t = config.train
    if t.unsloth_compile is not None:
        return t.unsloth_compile
    if t.quantization == "16bit":
        return True
    if parameters is None:
        from titlegen.disk import checkpoint_parameters

        parameters = checkpoint_parameters(config.base_model_dir)[0]
    return 0 < parameters < COMPILE_QLORA_MAX_PARAMS


def unsloth_checkpointing(t) -> str | bool:
    """`use_gradient_checkpointing` for Unsloth's `get_peft_model` from resolved `train` settings: False without
    checkpointing; with it, "unsloth" (each checkpointed layer's input offloaded to host memory, Unsloth's recipe)
    unless `train.offload_activations` is false, then True (plain checkpointing, the inputs stay on the card)."""
    if not t.gradient_checkpointing:
        return False
    return True if t.offload_activations is False else "unsloth"


def unsloth_load_options(t, four_bit: bool) -> dict[str, Any]:
    """Keyword arguments for Unsloth's `FastModel.from_pretrained` that follow `train` settings.

    `train.per_layer_embeddings_on_host` (None = on for 4-bit QLoRA) asks Unsloth for
    `offload_embedding=True`. Gemma 3n's input embedding is tied to its output head and stays, but its
    per-layer embedding table, frozen under LoRA (E4B: 4.4 GiB in bf16, larger than its 4-bit decoder),
    moves to host memory. Unsloth looks the rows up there and copies them to the card, and it keeps the
    table in host memory when the trainer moves the model. Off leaves Unsloth's default: "auto", which
    moves embeddings only when the card lacks a training step's reserve.
    """
    options: dict[str, Any] = {"attn_implementation": t.attn_implementation} if t.attn_implementation else {}
    host = t.per_layer_embeddings_on_host if t.per_layer_embeddings_on_host is not None else four_bit
    if host:
        options["offload_embedding"] = True
    return options


def per_layer_embeddings_device(model) -> str | None:
    """Where Gemma 3n's per-layer embedding table is (e.g. `cpu`, `cuda:0`); None for models without one."""
    import torch

    for module in model.modules():
        table = getattr(module, "embed_tokens_per_layer", None)
        if isinstance(table, torch.nn.Embedding):
            return str(table.weight.device)
    return None


def load_model(config: TrainWorkerConfig, engine: str, cuda: bool):
    """(model with LoRA attached, tokenizer) for the chosen engine.

    Resolves `config.train.gradient_checkpointing` in place from the base model's size, once, so the
    LoRA call, the trainer, the out-of-memory advice and the result record all see the same answer.
    """
    from titlegen.prompt import chat_template

    t = config.train
    base = config.base_model_dir
    rank = config.lora_rank
    alpha = t.lora_alpha or rank
    four_bit = cuda and t.quantization == "4bit"
    if engine == "unsloth":
        from unsloth import FastModel

        extra = unsloth_load_options(t, four_bit)
        model, tokenizer = FastModel.from_pretrained(
            model_name=base, max_seq_length=t.max_seq_length, load_in_4bit=four_bit,
            load_in_16bit=not four_bit, full_finetuning=False, dtype=None, random_state=t.seed, **extra,
        )
        t.gradient_checkpointing = use_checkpointing(config, model, cuda)
        model = FastModel.get_peft_model(
            model, finetune_vision_layers=False, finetune_language_layers=True,
            finetune_attention_modules=True, finetune_mlp_modules=True, r=rank, lora_alpha=alpha,
            lora_dropout=t.lora_dropout, bias="none", random_state=t.seed,
            use_gradient_checkpointing=unsloth_checkpointing(t),
        )
    else:
        import torch
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32, "attn_implementation": "eager"}
        if four_bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        if cuda:
            kwargs["device_map"] = {"": 0}
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        t.gradient_checkpointing = use_checkpointing(config, model, cuda)
        if four_bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)
        lora = LoraConfig(
            r=rank, lora_alpha=alpha, lora_dropout=t.lora_dropout, bias="none",
            target_modules=LANGUAGE_TARGET_REGEX, task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        tokenizer = AutoTokenizer.from_pretrained(base)
    if cuda and not (engine == "unsloth" and use_unsloth_compile(config)):
        # Gemma 3n, run eagerly: no host-to-device copy in each sparse MLP's forward (a compiled block
        # folds that copy into its graph already, so compiled runs are left as Unsloth traces them).
        from titlegen.model_patches import without_host_syncs

        without_host_syncs(model)
    # Gemma 3n comes back as a processor; text training only needs its tokenizer.
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    tokenizer.chat_template = chat_template()
    return model, tokenizer


def fused_head_available() -> bool:
    """TRL's fused LM head (`model(..., fused_lm_head=True)` returning per-token log-probabilities) can run: it needs
    Triton, which CPU-only torch lacks (on CUDA Unsloth serves the same slot with its own kernel)."""
    from trl.trainer import utils as trl_utils

    return getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None


def trainer_class():
    """TRL's `SFTTrainer`, or where Triton is missing (CPU-only torch) a subclass with the plain loss.

    TRL 1.15 computes the loss through a Triton kernel (a fused LM head) and fails without Triton.
    The model's own causal-LM loss over the same labels (-100 on the prompt) is the same quantity.
    """
    from transformers import Trainer
    from trl import SFTTrainer

    if fused_head_available():
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return PlainLossSFTTrainer


def token_weights(labels, stop_token_id: int, weight: float):
    """Each next-token label's weight in the loss: `weight` where it is the stop token, 1 elsewhere, 0 where ignored (-100)."""
    import torch

    ones = (labels != -100).to(torch.float32)
    return torch.where(labels == stop_token_id, ones * weight, ones)


def stop_weighted(trainer_cls, stop_token_id: int, weight: float):
    """`trainer_cls` whose training loss weights the stop token's label by `weight` (`train.stop_token_weight`).

    The loss stays a sum over label tokens divided by the step's label tokens (`num_items_in_batch`), as TRL's and the
    model's own are, so micro-batches (`token_capped`) still add up; only the stop token's term counts `weight` times.
    On CUDA the per-token log-probabilities come from the fused LM head TRL's own loss uses (no full logits); without it
    (CPU-only torch) from the logits. Evaluation (the validation loss that picks the kept adapter) is left unweighted.
    `weighted_steps` counts the training losses computed here.
    """
    if weight == 1.0:
        return trainer_cls
    import torch

    fused = fused_head_available()

    class StopWeightedTrainer(trainer_cls):
        weighted_steps = 0
        loss_path = "fused LM head" if fused else "logits"

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training:
                return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            inputs["use_cache"] = False
            labels = inputs["labels"]
            if fused:
                outputs = model(**inputs, fused_lm_head=True)
                nll = -outputs.log_probs  # (rows, tokens - 1), zero where the label is ignored
            else:
                outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
                logits = outputs.logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none")
            weights = token_weights(labels[:, 1:], stop_token_id, weight).to(nll.device)
            count = (labels[:, 1:] != -100).sum() if num_items_in_batch is None else num_items_in_batch
            loss = (nll * weights).sum() / torch.as_tensor(count, device=nll.device).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            self.weighted_steps += 1
            return (loss, outputs) if return_outputs else loss

    StopWeightedTrainer.__name__ = f"StopWeighted{trainer_cls.__name__}"
    return StopWeightedTrainer


def token_capped(trainer_cls, micro_batch_tokens: int | None):
    """`trainer_cls` whose training step splits a batch of more than `micro_batch_tokens` padded tokens into
    equal micro-batches of rows (as few as fit the cap), one backward pass each, before the optimizer step.

    TRL's loss (and the model's own, with `num_items_in_batch`) is a sum over label tokens divided by the
    label tokens of the whole optimizer step, so the micro-batches' gradients add up to the batch's own:
    the same update, with the activations of one micro-batch alive at a time. A step without
    `num_items_in_batch` (a mean per call, which would not add up) is left whole. `split_steps` counts
    the steps split.
    """
    if not micro_batch_tokens:
        return trainer_cls
    import torch

    class TokenCappedTrainer(trainer_cls):
        split_steps = 0

        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs.get("input_ids")
            if num_items_in_batch is None or ids is None or ids.dim() != 2 or ids.shape[0] < 2 or ids.numel() <= micro_batch_tokens:
                return super().training_step(model, inputs, num_items_in_batch)
            rows = ids.shape[0]
            parts = min(rows, -(-ids.numel() // micro_batch_tokens))
            size = -(-rows // parts)
            self.split_steps += 1
            loss = None
            for start in range(0, rows, size):
                part = {k: v[start : start + size] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
                        for k, v in inputs.items()}
                this = super().training_step(model, part, num_items_in_batch)
                loss = this if loss is None else loss + this
            return loss

    TokenCappedTrainer.__name__ = f"TokenCapped{trainer_cls.__name__}"
    return TokenCappedTrainer


def build_trainer(config: TrainWorkerConfig, model, tokenizer, cuda: bool, engine: str, train_limit: int | None = None):
    """TRL `SFTTrainer` over the train and validation splits with every hyperparameter from config."""
    from trl import SFTConfig, SFTTrainer

    t = config.train
    train_ds = build_dataset(config.train_file, tokenizer, config, train_limit, augment=True)
    eval_ds = None
    if t.eval_every_epoch and config.validation_file:
        eval_ds = build_dataset(config.validation_file, tokenizer, config, config.max_validation_rows)
    args = SFTConfig(
        output_dir=config.checkpoint_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        optim=t.optimizer,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_seq_length,
        completion_only_loss=True,
        bf16=cuda,
        fp16=False,
        # Unsloth brings its own checkpointing through get_peft_model.
        gradient_checkpointing=engine == "transformers" and bool(t.gradient_checkpointing),
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=t.logging_steps,
        eval_strategy="epoch" if eval_ds is not None else "no",
        save_strategy="steps",
        save_steps=t.checkpoint_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        dataset_num_proc=None,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        # Batches of similar lengths (the longest first, so an out-of-memory error shows at once),
        # padded to a multiple of `pad_to_multiple_of` on CUDA: little padding, few distinct shapes
        # for the compiled kernels (docs/finetune.md "Speed").
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        pad_to_multiple_of=(t.pad_to_multiple_of or None) if cuda else None,
        # None leaves the choice to Unsloth (its SFTConfig's default); TRL's own default is False.
        **({"padding_free": t.padding_free} if engine == "unsloth" and t.padding_free is not None else {}),
    )
    stop_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    trainer = token_capped(stop_weighted(trainer_class(), stop_id, t.stop_token_weight), t.micro_batch_tokens)(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        processing_class=tokenizer, callbacks=[make_callback(config, engine)],
    )
    # Our progress lines replace the dict that transformers prints at each log step.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def label_stats(trainer, tokenizer) -> dict:
    """What the loss sees in the first training example: token counts and the decoded labelled span."""
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    keep = labels != -100
    return {
        "tokens": int(labels.numel()),
        "label_tokens": int(keep.sum()),
        "labelled_text": tokenizer.decode(batch["input_ids"][0][keep]),
    }


def last_checkpoint(folder: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(folder) if Path(folder).is_dir() else None


def library_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "unsloth", "unsloth_zoo"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def start_engine(config: TrainWorkerConfig) -> tuple[bool, str]:
    """(CUDA available, engine) for this config, with Unsloth's switches set and Unsloth imported when it is the
    engine (before torch-adjacent libraries); CPU-only runs get every core and a warning."""
    force_cpu = config.device == "cpu"
    # Unsloth must be imported before torch-adjacent libraries (transformers, trl, peft) are.
    cuda = False
    if not force_cpu:
        import torch

        cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise SystemExit("device='cuda' but no CUDA device is visible")
    engine = choose_engine(config, cuda)
    if engine == "unsloth":
        # Resolved once, in place, from the base's size (its safetensors headers): the environment below, the
        # model patches and the result record all see the same answer.
        config.train.unsloth_compile = use_unsloth_compile(config)
        # Read by Unsloth at import time; an explicit environment setting wins. Flex attention is off:
        # it compiles its kernels once per sequence length, so real (varying) batches kept it
        # compiling for minutes (docs/finetune.md "Speed"). The rest of Unsloth's compilation follows
        # train.unsloth_compile (by default on, but off for 4-bit QLoRA of a base of 1 B parameters or more).
        os.environ.setdefault("UNSLOTH_ENABLE_FLEX_ATTENTION", "0")
        if not use_unsloth_compile(config):
            os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "1")
        import unsloth  # noqa: F401  (patches transformers/trl/peft on import)
    import torch

    if not cuda:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        print(
            "WARNING: no CUDA GPU: training on CPU with plain transformers + PEFT in float32. Gemma 3 270M "
            "takes about 10-20 s per step at batch 2 on 2 cores; Gemma 3n E4B on CPU would take days and "
            "~32 GB of RAM. Use a GPU for real runs.",
            flush=True,
        )
    return cuda, engine


def train(config: TrainWorkerConfig) -> WorkerResult:
    """Train, write the adapter and tokenizer to `config.output_dir`, return the result record."""
    t0 = time.time()
    cuda, engine = start_engine(config)
    import torch

    torch.manual_seed(config.train.seed)
    t_load = time.time()
    model, tokenizer = load_model(config, engine, cuda)
    load_seconds = time.time() - t_load
    trainer = build_trainer(config, model, tokenizer, cuda, engine, config.max_train_rows)
    stats = label_stats(trainer, tokenizer)
    emit("labels", load_seconds=round(load_seconds, 1), **stats)

    resume = last_checkpoint(config.checkpoint_dir)
    if resume:
        print(f"Resuming from {resume}", flush=True)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as e:
        total = torch.cuda.get_device_properties(0).total_memory
        raise SystemExit(out_of_memory_advice(config, total)) from e
    train_seconds = time.time() - t_train
    state = trainer.state
    resumed_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
    if getattr(trainer, "weighted_steps", None) == 0 and state.global_step > resumed_step:
        raise SystemExit(f"train.stop_token_weight={config.train.stop_token_weight} was not applied: {type(trainer).__name__}.compute_loss "
                         "never ran for a training step (a trainer patched to compute its loss elsewhere?). Train with "
                         "train.stop_token_weight=1, or report the library versions in the worker log.")
    progress = next(c for c in trainer.callback_handler.callbacks if hasattr(c, "marks"))
    evals = [h for h in state.log_history if "eval_loss" in h]
    if trainer.eval_dataset is not None and (not evals or evals[-1]["step"] != state.global_step):
        trainer.evaluate()  # max_steps stopped mid-epoch: still score the final weights
        evals = [h for h in state.log_history if "eval_loss" in h]
    losses = [h for h in state.log_history if "loss" in h]
    best = min(evals, key=lambda h: h["eval_loss"]) if evals else None

    out = Path(config.output_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    best_dir = Path(config.checkpoint_dir) / BEST_DIR
    best_record = json.loads((best_dir / "best.json").read_text()) if (best_dir / "best.json").exists() else None
    kept = adapter_to_keep(config.train.keep_adapter, evals, best_record, state.global_step)
    if kept["from"] == "best":
        for f in best_dir.iterdir():
            if f.name != "best.json":
                shutil.copy2(f, out / f.name)
    else:
        trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "log_history.json").write_text(json.dumps(state.log_history, indent=1))
    record = {
        "engine": engine,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "quantization": config.train.quantization if cuda else "none (float32 on CPU)",
        "resumed_from": resume,
        "global_step": state.global_step,
        "epochs_done": state.epoch,
        "final_train_loss": losses[-1]["loss"] if losses else None,
        "mean_train_loss": result.training_loss,
        "first_train_loss": losses[0]["loss"] if losses else None,
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "best_eval_loss": best["eval_loss"] if best else None,
        "best_step": best["step"] if best else None,
        "kept_adapter": kept,
        "tokens_seen": int(state.num_input_tokens_seen or 0),
        "train_rows": len(trainer.train_dataset),
        "validation_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "train_seconds": round(train_seconds, 2),
        "train_runtime_this_process": result.metrics.get("train_runtime"),
        "wall_seconds": round(time.time() - t0, 2),
        "load_seconds": round(load_seconds, 1),
        "eval_seconds": evals[-1].get("eval_runtime") if evals else None,
        **steady_rate(progress.marks),
        # The first optimizer step includes Unsloth's torch.compile; later steps show recompiles.
        "first_step_seconds": round(progress.marks[0][1] - progress.began, 2) if progress.marks else None,
        # Each step's seconds and non-padding tokens after the first (a whole 270M run at batch 16: 210 steps), validation
        # passes and checkpoint saves left out: whether a slow step is a long batch or a warm-up.
        "step_seconds": [round(b[1] - a[1], 3) for a, b in zip(progress.marks, progress.marks[1:])][:STEP_RECORD],
        "step_tokens": [b[2] - a[2] for a, b in zip(progress.marks, progress.marks[1:])][:STEP_RECORD],
        "unsloth_env": {k: v for k, v in os.environ.items() if k.startswith(("UNSLOTH_", "TORCH_LOGS"))},
        # What Unsloth made of train.padding_free (None = its own rule): the batches actually trained.
        "padding_free": bool(getattr(trainer.args, "padding_free", False)),
        # Optimizer steps whose batch went through as micro-batches (train.micro_batch_tokens).
        "split_steps": getattr(trainer, "split_steps", 0),
        # train.stop_token_weight above 1: the weight, where the per-token log-probabilities came from, and how many
        # training losses were weighted (0 would mean a trainer that bypassed the weighting).
        "stop_token_weight": {"weight": config.train.stop_token_weight, "loss_path": trainer.loss_path,
                              "weighted_steps": trainer.weighted_steps} if hasattr(trainer, "weighted_steps") else None,
        "gradient_checkpointing": config.train.gradient_checkpointing,  # resolved by load_model
        # Where checkpointed layer inputs waited for the backward pass (train.offload_activations); None without checkpointing.
        "activations_offloaded": (unsloth_checkpointing(config.train) == "unsloth") if engine == "unsloth" and config.train.gradient_checkpointing else None,
        # Where Gemma 3n's per-layer embedding table ended up after training (train.per_layer_embeddings_on_host).
        "per_layer_embeddings_device": per_layer_embeddings_device(trainer.model),
        "unsloth_compile": engine == "unsloth" and use_unsloth_compile(config),
        # The whole process's peak (windows folded by the progress callback), then its two parts.
        "peak_gpu_gib": round(max(torch.cuda.max_memory_allocated(), *progress.peaks.values()) / 2**30, 3) if cuda else None,
        **(memory_split(progress.marks, progress.peaks) if cuda else {}),
        "label_stats": stats,
        "libraries": library_versions(),
    }
    result = WorkerResult(**record)
    result.write(out / "worker_result.json")
    emit("done", **{k: record[k] for k in ("global_step", "final_train_loss", "best_eval_loss", "tokens_seen", "wall_seconds")})
    return result


def adapter_to_keep(keep: str, evals: list[dict], best_record: dict | None, global_step: int) -> dict:
    """Which adapter the stage keeps (`train.keep_adapter`): unless `last` is asked for, the saved best one when it
    is the best validation pass on record by `eval_rank`, else the final weights. `evals` are the log entries with an
    `eval_loss` (and, under `checks`, the failed-check share)."""
    best = min(evals, key=lambda h: eval_rank(h, keep)) if evals else None
    if keep != "last" and best and best_record and best_record["step"] == best["step"]:
        origin, entry = "best", best
    else:
        origin, entry = "last", next((h for h in evals if h["step"] == global_step), {})
    kept = {"from": origin, "step": entry.get("step", global_step), "eval_loss": entry.get("eval_loss")}
    if FAILED_CHECKS in entry:
        kept["failed_checks"] = entry[FAILED_CHECKS]
    return kept


def out_of_memory_advice(config: TrainWorkerConfig, total_bytes: int, checkpointing: bool | None = None) -> str:
    """What to change when training ran out of GPU memory (the checkpoints written so far are kept)."""
    t = config.train
    batch, accumulation = t.per_device_batch_size, t.gradient_accumulation_steps
    fixes = []
    if batch > 1:
        fixes.append(f"train.per_device_batch_size={batch // 2} with train.gradient_accumulation_steps={accumulation * 2} "
                     "(same effective batch)")
    if t.quantization == "16bit":
        fixes.append("train.quantization='4bit' (QLoRA)")
    if not (t.gradient_checkpointing if checkpointing is None else checkpointing):
        fixes.append("train.gradient_checkpointing=true")
    fixes.append(f"a shorter train.max_seq_length (now {t.max_seq_length})")
    return (f"CUDA out of memory while training at per_device_batch_size={batch}, quantization={t.quantization} on a "
            f"{total_bytes / 2**30:.0f} GiB GPU. Re-run with " + ", or ".join(fixes) + "; the run resumes from its last checkpoint.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m titlegen.train_worker CONFIG.json", file=sys.stderr)
        return 2
    train(TrainWorkerConfig.read(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
