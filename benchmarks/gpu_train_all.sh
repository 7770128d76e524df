#!/usr/bin/env bash
# All six SSL blocks at upstream settings + assembly + pretext table on one GPU, from a region pack.
# Usage (GPU box, repo root): benchmarks/gpu_train_all.sh PACK OUTDIR [extra train_all args]
# Checkpoints (best.pt) and JSONs come back as a tar split into <=15 MiB parts; embeddings are
# re-exported from best.pt on the CPU side (python -m ftcp ssl-export --block N --checkpoint ...).
set -uo pipefail
PACK=$1; OUTDIR=$2; shift 2
RUN=${RUN_DIR:-runs/ssl_gpu}
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUTDIR/gpu.txt"
PYTHONUNBUFFERED=1 timeout "${TRAIN_TIMEOUT:-540}" python3 SSL_Training/train_all.py --data "$PACK" --out "$RUN" \
    --device cuda --no-progress --table-dir "$OUTDIR/table" "$@" 2>&1 | tee "$OUTDIR/train_all.log"
echo "train_all exit: ${PIPESTATUS[0]}"
# best.pt + JSONs of every block (and last.pt of an unfinished one, to resume) -> tar parts
files=$(cd "$RUN" && ls -d *.json block*/best.pt block*/*.json 2>/dev/null)
for d in "$RUN"/block*; do [ -f "$d/metrics.json" ] || files="$files $(cd "$RUN" && ls ${d##*/}/last.pt 2>/dev/null)"; done
(cd "$RUN" && tar cf - $files) | split -b 15m -d - "$OUTDIR/ssl_run.tar."
ls -la "$OUTDIR"
