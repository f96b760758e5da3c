#!/usr/bin/env bash
# Real tokenizer vocabularies for the chat-format parity tests (see ../shared/OFFLINE.md):
#   - LLaMA-2 (spm), LLaMA-3 (bpe) and Qwen2 vocab-only GGUFs from the llama-cpp-python source distribution
#   - Mistral-7B v0.1 sentencepiece model from the mistral-common wheel
# They come from PyPI by package name; nothing is committed. Idempotent.
set -euo pipefail
dest="${1:-.cache/test-assets}"
mkdir -p "$dest"
if [ -f "$dest/.complete" ]; then exit 0; fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip_="${PIP:-.venv/bin/python -m pip}"
$pip_ download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp" --wildcards \
    '*/models/ggml-vocab-llama-spm.gguf*' '*/models/ggml-vocab-llama-bpe.gguf*' '*/models/ggml-vocab-qwen2.gguf*'
cp "$tmp"/llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-* "$dest/"
$pip_ download -q --no-deps mistral-common==1.13.1 -d "$tmp"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/mistral_common-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    with open(sys.argv[2] + "/mistral-tokenizer.model.v1", "wb") as f:
        f.write(z.read("mistral_common/data/tokenizer.model.v1"))
PY
touch "$dest/.complete"
echo "test assets in $dest"
