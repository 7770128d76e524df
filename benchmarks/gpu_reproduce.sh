#!/usr/bin/env bash
# Real-data reproduction on a lent GPU box whose image has torch, numpy, pandas and scikit-learn but
# not pymatgen/matminer/shap: those travel as wheels (see the README, "GPU box"), the MP CSV travels
# (15 MB) and the store is rebuilt there, byte-identical to the CPU build (compare manifest.json).
#
#   benchmarks/gpu_reproduce.sh ssl OUTDIR CSV PREPARED_SSL_DIR [train_all args]
#       build + split the store under $DATA_ROOT, copy the prepared SSL files (split, normaliser,
#       crystal systems made on the CPU by `ftcp ssl-prepare`), train all six blocks, assemble,
#       pretext table; best.pt + JSONs come back as <=15 MiB tar parts (re-export on the CPU).
#   benchmarks/gpu_reproduce.sh scenarios OUTDIR [scenario names: s1 s2 s3]
#       the chosen scenario scripts, concurrently, on the store and features left by `ssl`
#       (the box must still be the same one); their JSON comes back as results.tar.
set -uo pipefail
STAGE=$1; OUTDIR=$2; shift 2
DATA=${DATA_ROOT:-/tmp/crys_rep_data}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$HERE"
case $STAGE in
ssl)
    CSV=$1; PREP=$2; shift 2
    start=$(date +%s)
    python3 -m ftcp build "$CSV" --data "$DATA" --workers "$(nproc)" --no-progress 2>&1 | tee "$OUTDIR/build.log"
    python3 -m ftcp split --data "$DATA" 2>&1 | tee -a "$OUTDIR/build.log"
    echo "build + split: $(( $(date +%s) - start )) s" | tee -a "$OUTDIR/build.log"
    mkdir -p "$DATA/SSL" && cp "$PREP"/* "$DATA/SSL/" && cp "$DATA/manifest.json" "$OUTDIR/"
    RUN_DIR="$DATA/SSL" bash "$HERE/benchmarks/gpu_train_all.sh" "$DATA" "$OUTDIR" "$@"
    ls -la "$DATA/SSL" | tee "$OUTDIR/ssl_dir.txt"
    # the device tool returns at most 8 files: the small ones travel as one tar
    (cd "$OUTDIR" && tar cf meta.tar --remove-files gpu.txt build.log manifest.json train_all.log ssl_dir.txt table)
    ;;
scenarios)
    [ -f "$DATA/SSL/ssl_features.npy" ] || { echo "no SSL features under $DATA: run the ssl stage on this box first"; exit 3; }
    declare -A SCRIPT=([s1]=Scenario1_Linear_Regression/run_scenario1.py
                       [s2]=Scenario2_Hybrid_Enrichment/run_scenario2.py
                       [s3]=Scenario3_Sample_Efficiency/run_scenario3.py
                       [s3g]=Scenario3_Sample_Efficiency/run_scenario3.py)
    pids=()
    for s in "${@:-s1 s2 s3}"; do
        var="ARGS_${s}"   # extra flags per scenario from the environment (ARGS_s2="--seeds 3" ...)
        ( timeout "${SCEN_TIMEOUT:-540}" python3 "$HERE/Evaluation_Scenarios/${SCRIPT[$s]}" \
            --data "$DATA" --device cuda --no-report ${!var:-} > "$OUTDIR/$s.log" 2>&1;
          echo "$s exit: $?" >> "$OUTDIR/$s.log" ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    tail -n 3 "$OUTDIR"/s*.log
    cp "$OUTDIR"/s*.log "$DATA/Results/" 2>/dev/null
    (cd "$DATA" && tar cf "$OUTDIR/results.tar" Results) && rm -f "$OUTDIR"/s*.log
    ls -la "$OUTDIR"
    ;;
*) echo "stage: ssl | scenarios"; exit 2;;
esac
