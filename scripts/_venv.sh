# Sourced by scripts/run and scripts/test: create the venv once and keep it in step with the
# requirements file named in $1 (reinstalling only when that file is newer than the last install).
# Everything it prints goes to stderr, so `scripts/run ask --json` keeps stdout for JSON.
set -euo pipefail
VENV="${VENV:-.venv}"
requirements="$1"
stamp="$VENV/.installed-$(basename "$requirements" .txt)"
if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating the virtualenv $VENV ..." >&2
    python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
    started=$SECONDS
    # A first install takes minutes: say so, and let pip show what it fetches and installs
    # (not --quiet) so a long wait is visibly progress, not a hang.
    echo "Installing dependencies into $VENV: a first install takes a few minutes and about" \
        "1.5 GB with the CPU build of torch (several GB with the default CUDA build)." >&2
    # torch first and pinned, so sentence-transformers does not pick a newer one. Where pip
    # finds no local CPU wheel, set TORCH_INDEX_URL to PyTorch's CPU index: the default
    # Linux wheels bring several GB of CUDA libraries.
    echo "[1/2] torch 2.13.0 (the largest download) ..." >&2
    "$VENV/bin/pip" install --progress-bar on "torch==2.13.0" \
        ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} >&2
    echo "[2/2] the rest of $requirements ..." >&2
    "$VENV/bin/pip" install --progress-bar on -r "$requirements" >&2
    touch "$stamp"
    echo "Dependencies installed in $((SECONDS - started)) s ($(du -sh "$VENV" | cut -f1) in $VENV)." >&2
fi
# The project itself, editable, so `$VENV/bin/research-agent` runs this checkout; reinstalled
# only when pyproject.toml changes (the code itself is read from the checkout). The venv's
# own setuptools builds it when it is recent enough (70.1 builds wheels on its own): no
# download; an older one makes pip fetch a current one to build with.
project_stamp="$VENV/.installed-project"
if [ ! -x "$VENV/bin/research-agent" ] || [ ! -f "$project_stamp" ] \
    || [ pyproject.toml -nt "$project_stamp" ]; then
    echo "Installing the research-agent command into $VENV ..." >&2
    isolation=()
    if "$VENV/bin/python" -c 'import setuptools, sys
major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
sys.exit((major, minor) < (70, 1))' 2>/dev/null; then
        isolation=(--no-build-isolation)
    fi
    "$VENV/bin/python" -m pip install --quiet --no-deps ${isolation[@]+"${isolation[@]}"} -e . >&2
    touch "$project_stamp"
fi
