#!/usr/bin/env bash
# Speed and peak GPU memory of LoRA and DoRA (bf16, with and without gradient checkpointing) on
# randomly initialised SmolLM2-135M and a 1B-class Llama: ONE JSON line on stdout. Runs from a
# clone with no network; needs only torch, transformers and peft (see benchmarks/gpu_check.py).
#
#   scripts/gpu_check.sh                              # a CUDA machine
#   WHICHLORA_GPU_CHECK_TINY=1 scripts/gpu_check.sh   # tiny shapes on CPU: checks the script
#   PYTHON=/path/to/python scripts/gpu_check.sh       # another interpreter (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" benchmarks/gpu_check.py
