#!/usr/bin/env bash
# The prepared accelerator measurement: lingua_jax against the PyTorch peer on BLOOM-7b1 and Llama-3-8B
# architectures (random weights, bfloat16) on one GPU: pooled extraction of 9 x 100 FLORES sentences and
# masked perplexity of 4 windows of 4096 tokens, two alternating rounds each, MFU against a measured
# bfloat16 matmul and against the chip's spec-sheet peak. About 3 minutes per architecture on an H200
# (building the random checkpoint with transformers on the GPU, saving it, both loading it, compiling).
#
#   bash benchmarks/gpu.sh                         # on the GPU machine, from the repository root
#   bash benchmarks/gpu.sh --flores=DIR            # extra flags go to every benchmarks/compare.py run
#   DEVICE=cpu ARCHITECTURES="tiny-bloom tiny-llama" bash benchmarks/gpu.sh --n=3 --ppl_seqlen=64  # dry run
#
# Needs the project installed with a CUDA jax and torch (see README); FLORES-200 devtest in the data
# directory ($LINGUA_JAX_DATA_DIR or ~/.cache/lingua_jax/data) or --flores. Tables go to
# $RESULTS/<architecture>/compare.{md,csv,json} (RESULTS: $OUT when set, else /tmp/lingua_jax_bench/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-gpu}
ARCHITECTURES=${ARCHITECTURES:-bigscience/bloom-7b1 meta-llama/Meta-Llama-3-8B}
RESULTS=${RESULTS:-${OUT:-/tmp/lingua_jax_bench/gpu}}
for architecture in $ARCHITECTURES; do
  name=$(basename "$architecture" | tr '[:upper:]' '[:lower:]')
  python benchmarks/compare.py --device="$DEVICE" --architecture="$architecture" --stages=extract,perplexity \
    --noreference --n=100 --rounds=2 --ppl_seqlen=4096 --ppl_windows=4 --ppl_batch=2 \
    --model_dir="${MODELS:-/tmp/lingua_jax_bench}/$name-random" --output_dir="$RESULTS/$name" "$@"
done
