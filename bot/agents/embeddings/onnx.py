"""The ``onnx`` embedding backend: a sentence-transformers model in ONNX Runtime.

sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, whose releases pin a
``transformers`` older than sentence-transformers 6 accepts, so the export and the session
are made here directly (bench/inference.py measures them against torch):

* :func:`export_fp32` exports the model's transformer with ``torch.onnx.export`` (the
  TorchScript exporter: the torch.export-based default needs ``onnxscript``), from the
  model's local files, with dynamic batch and sequence axes;
* :func:`quantize_int8` quantises its weights to int8 dynamically (per channel);
* :class:`OnnxEncoder` runs it: the model's own tokenizer, then mean pooling over the
  attention mask and L2 normalisation, as SentenceTransformer.encode does for this kind of
  model (Transformer, mean Pooling, optionally Normalize; anything else is refused).

:func:`ensure_export` builds the export once into ``<root>/<key>/`` (the key hashes the
source and the quantisation), in a temporary directory renamed into place, under a lock
file so that several workers starting together build it once; later starts reuse it.

Only the export imports torch and sentence-transformers; a worker loading an existing
export needs onnxruntime and the tokenizer only. Requires ``onnx`` and ``onnxruntime``,
which are not requirements of the bot (``pip install onnx onnxruntime``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.agents.embeddings.vectors import FloatArray

_log = logging.getLogger(__name__)

# Bumped when the export's layout or method changes, so older exports are rebuilt.
EXPORT_VERSION = 1
MODEL_FILE = "model.onnx"
META_FILE = "export.json"
OPSET = 17
PACKAGES = ("onnx", "onnxruntime")
INSTALL = "pip install onnx onnxruntime"


def missing_packages(find_spec: Callable[[str], object | None] | None = None) -> list[str]:
    """Which of :data:`PACKAGES` cannot be imported (found without importing them)."""
    if find_spec is None:
        from importlib.util import find_spec as _find  # noqa: PLC0415

        find_spec = _find
    missing = []
    for name in PACKAGES:
        try:
            found = find_spec(name)
        except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules
            found = None
        if found is None:
            missing.append(name)
    return missing


def export_key(source: str, quantize: bool, fingerprint: str = "") -> str:
    """The export's directory name: a hash of what it is built from and how."""
    text = json.dumps([EXPORT_VERSION, source, bool(quantize), fingerprint])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def source_fingerprint(source: str) -> str:
    """For a local model directory, its files' names, sizes and mtimes; else ``""``."""
    directory = Path(source)
    if not directory.is_dir():
        return ""
    parts = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            stat = path.stat()
            parts.append(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- export


def export_fp32(model: Any, path: Path) -> None:
    """Export ``model``'s transformer (a SentenceTransformer's first module) to ``path``.

    The graph takes the tokenizer's tensors and returns ``last_hidden_state``; pooling is
    done by :class:`OnnxEncoder`.
    """
    import torch  # noqa: PLC0415 - only the export needs it
    from torch.jit._trace import TracerWarning  # noqa: PLC0415

    transformer = model[0].auto_model.eval()
    sample = model.tokenizer(["an example", "another example"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = transformer

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    # Expected from this export, and only these are silenced (the tests check the vectors
    # it gives): the TorchScript exporter's deprecation (two DeprecationWarnings), the
    # tracer's note on the Python booleans transformers' masking and attention branch on
    # (TracerWarning), and opset 17's note on how it lowers advanced indexing.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings("ignore", "The feature will be removed", DeprecationWarning)
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        torch.onnx.export(
            Wrapped(),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """``source``'s weights dynamically quantised to int8 (per channel), into ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing before quantization" every time
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def check_pipeline(model: Any) -> None:
    """Raise ``ValueError`` unless ``model`` is Transformer, mean Pooling[, Normalize]."""
    names = [type(module).__name__ for module in model]
    pooling = model[1] if len(names) > 1 else None
    mean = pooling is not None and getattr(pooling, "pooling_mode", None) in (None, "mean")
    if pooling is not None and hasattr(pooling, "pooling_mode_mean_tokens"):
        mean = bool(pooling.pooling_mode_mean_tokens)
    if names[:2] != ["Transformer", "Pooling"] or not mean or names[2:] not in ([], ["Normalize"]):
        raise ValueError(
            f"the onnx backend runs models made of Transformer, mean Pooling and Normalize; "
            f"this one is {' + '.join(names)}"
        )


def build(source: str, target: Path, *, quantize: bool) -> None:
    """Load ``source`` with sentence-transformers and write its export into ``target``.

    ``target`` must not exist; it appears complete or not at all (built in a sibling
    temporary directory, then renamed).
    """
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    model = SentenceTransformer(source, device="cpu")
    check_pipeline(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fp32 = tmp / ("model_fp32.onnx" if quantize else MODEL_FILE)
        export_fp32(model, fp32)
        if quantize:
            quantize_int8(fp32, tmp / MODEL_FILE)
            fp32.unlink()
        model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        meta = {
            "version": EXPORT_VERSION,
            "source": source,
            "quantize": quantize,
            "max_seq_length": int(model.max_seq_length or 512),
            "dimension": int(model.get_embedding_dimension() or 0),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held for the block; a no-op without fcntl."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - not on Linux
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_export(source: str, root: Path, *, quantize: bool) -> Path:
    """The export of ``source`` under ``root``: reused if there, else built now; its directory."""
    target = root / export_key(source, quantize, source_fingerprint(source))
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{target.name}.lock"):
        if (target / META_FILE).is_file():
            _log.info("reusing the ONNX export at %s", target)
            return target
        if target.exists():  # not ours (no metadata): never written by build()
            shutil.rmtree(target)
        started = time.perf_counter()
        build(source, target, quantize=quantize)
        _log.info(
            "exported %s to ONNX (%s) at %s in %.1f s",
            source,
            "int8" if quantize else "fp32",
            target,
            time.perf_counter() - started,
        )
    return target


# --------------------------------------------------------------------------- inference


def _normalise(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class OnnxEncoder:
    """An ONNX export of a transformer in ONNX Runtime; tokenizer and pooling as ST's."""

    def __init__(
        self,
        path: Path,
        tokenizer: Any,
        max_length: int,
        batch_size: int,
        *,
        threads: int = 1,
        dimension: int = 0,
    ) -> None:
        self.path = path
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.dimension = dimension
        self.session: Any = None
        self.inputs: set[str] = set()
        self.set_threads(threads)

    @classmethod
    def load(
        cls, directory: Path, *, batch_size: int, threads: int, max_seq_length: int = 0
    ) -> OnnxEncoder:
        """The export :func:`build` wrote into ``directory``; ``max_seq_length`` 0: its own."""
        from transformers import AutoTokenizer  # noqa: PLC0415

        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        return cls(
            directory / MODEL_FILE,
            tokenizer,
            max_seq_length or int(meta["max_seq_length"]),
            batch_size,
            threads=threads,
            dimension=int(meta["dimension"]),
        )

    def set_threads(self, n: int) -> None:
        """(Re)create the session with ``n`` intra-op threads and one inter-op thread."""
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = n
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: Sequence[str]) -> FloatArray:
        """L2-normalised mean-pooled vectors of ``texts``, in their order."""
        out = []
        # Like SentenceTransformer.encode: longest first, so a batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            encoded = self.tokenizer(
                batch,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            feed = {k: v.astype(np.int64) for k, v in encoded.items() if k in self.inputs}
            (tokens,) = self.session.run(["last_hidden_state"], feed)
            mask = encoded["attention_mask"][..., None].astype(np.float32)
            pooled = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out.append(pooled.astype(np.float32))
        if not out:
            return np.zeros((0, self.dimension or 384), dtype=np.float32)
        vectors = np.concatenate(out)
        result = np.empty_like(vectors)
        result[order] = vectors
        return _normalise(result)
