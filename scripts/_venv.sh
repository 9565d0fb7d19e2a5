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
    # torch first and pinned: left to sentence-transformers, pip would pick the newest
    # build, which on Linux means several GB of CUDA libraries.
    "$VENV/bin/pip" install --quiet "torch==2.13.0"
    "$VENV/bin/pip" install --quiet -r "$requirements"
    touch "$stamp"
fi
