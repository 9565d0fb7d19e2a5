# Sourced by scripts/run and scripts/test: create the venv once and keep it in step with the
# requirements file named in $1 (reinstalling only when that file is newer than the last install).
set -euo pipefail
VENV="${VENV:-.venv}"
requirements="$1"
stamp="$VENV/.installed-$(basename "$requirements" .txt)"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
    echo "Installing dependencies into $VENV (first run only)..." >&2
    # torch first and pinned, so sentence-transformers does not pick a newer one. Where pip
    # finds no local CPU wheel, set TORCH_INDEX_URL to PyTorch's CPU index: the default
    # Linux wheels bring several GB of CUDA libraries.
    "$VENV/bin/pip" install --quiet "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    "$VENV/bin/pip" install --quiet -r "$requirements"
    touch "$stamp"
fi
