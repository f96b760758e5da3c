#!/usr/bin/env bash
# Real tokenizer vocabularies for the chat-format parity tests (see ../shared/OFFLINE.md):
#   - LLaMA-2 (spm), LLaMA-3 (bpe), Qwen2 and Gemma-4 vocab-only GGUFs from the llama-cpp-python source distribution
#   - Mistral-7B v0.1 sentencepiece model from the mistral-common wheel
# They come from PyPI by package name; nothing is committed. Idempotent.
set -euo pipefail
dest="${1:-.cache/test-assets}"
mkdir -p "$dest"
# Every file the tests read: a cache made by an older version of this script is completed, not trusted.
wanted=(ggml-vocab-llama-spm.gguf ggml-vocab-llama-bpe.gguf ggml-vocab-qwen2.gguf ggml-vocab-gemma-4.gguf
        mistral-tokenizer.model.v1)
complete=1
for f in "${wanted[@]}"; do [ -f "$dest/$f" ] || complete=0; done
if [ -f "$dest/.complete" ] && [ "$complete" = 1 ]; then exit 0; fi
rm -f "$dest/.complete"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip_="${PIP:-.venv/bin/python -m pip}"
$pip_ download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$tmp"
tar xzf "$tmp"/llama_cpp_python-0.3.36.tar.gz -C "$tmp" --wildcards \
    '*/models/ggml-vocab-llama-spm.gguf*' '*/models/ggml-vocab-llama-bpe.gguf*' '*/models/ggml-vocab-qwen2.gguf*' \
    '*/models/ggml-vocab-gemma-4.gguf*'
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
