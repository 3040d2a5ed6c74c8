"""Embedder canary: the configured encoder re-embeds a sample of payload texts to the stored
vectors ("same name, different encoder")."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lvm_pipeline.embedding import rowwise_cos, sample_rows
from lvm_pipeline.guards.config import GuardConfig
from lvm_pipeline.guards.result import N_EXAMPLES, GuardResult, verdict
from lvm_pipeline.payload import Payload

# What the figure is: the lowest cosine between a sampled text's stored vector and the one the
# configured embedder makes of it now.
MEASURE = "min_cosine_reembedded"


class TextEncoder(Protocol):
    """What the canary needs of an embedder (:class:`lvm_pipeline.embedding.Embedder` fits)."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N,) texts → (N, D) float32 unit rows."""

    def identity(self) -> dict[str, Any]:
        """id, dim and the measured fingerprint (weights_sha256, config_sha256)."""


def _describe_encoder(identity: dict[str, Any]) -> str:
    w, c = identity.get("weights_sha256"), identity.get("config_sha256")
    hashes = f" (weights {w[:12]}, config {c[:12]})" if w and c else ""
    return f"{identity.get('id', '?')!r}{hashes}"


def check_embedder_canary(payload: Payload, embedder: TextEncoder,
                          config: GuardConfig = GuardConfig(),
                          name: str = "check_embedder_canary") -> GuardResult:
    """Re-embedding a fixed sample of payload texts with the configured embedder gives back the
    stored vectors (minimum cosine >= ``min_canary_cosine``).

    Catches "same name, different encoder": another pooling or model behind the same id, a
    payload imported from elsewhere, an encoder upgraded in place. The recorded and the
    configured fingerprints go in the message, but the vectors decide.
    """
    threshold = config.min_canary_cosine
    configured = embedder.identity()
    recorded = dict(payload.manifest.get("embedder", {}))
    rule = (f"re-embedding {config.canary_sample} payload texts with the configured embedder "
            f"gives cosine >= {threshold} to the stored vectors")
    who = (f"configured embedder {_describe_encoder(configured)}; payload "
           f"{payload.build_id[:12]} records {_describe_encoder(recorded)}")
    same_weights = (recorded.get("weights_sha256") is not None
                    and recorded.get("weights_sha256") == configured.get("weights_sha256"))
    same_config = recorded.get("config_sha256") == configured.get("config_sha256")
    details: dict[str, Any] = {"configured": configured, "recorded": recorded,
                               "same_weights": same_weights, "same_config": same_config}
    if embedder.dim != payload.dim:
        return GuardResult(name, False, rule, 0.0, threshold,
                           f"ENCODER MISMATCH: the configured embedder makes {embedder.dim}-d "
                           f"vectors, the payload holds {payload.dim}-d ones ({who})", [],
                           details, measure=MEASURE)
    rows = sample_rows(len(payload), config.canary_sample, config.seed)
    texts = payload.chunks["text"].iloc[rows].astype(str).tolist()
    fresh = np.asarray(embedder.encode(texts), dtype=np.float32)  # (S, D)
    stored = np.asarray(payload.vectors[rows], dtype=np.float32)  # (S, D)
    cos = rowwise_cos(fresh, stored)
    cos = np.where(np.isfinite(cos), cos, -1.0)
    worst = np.argsort(cos)[:N_EXAMPLES]
    passed = bool(cos.min() >= threshold)
    examples = [f"cos {cos[i]:.3f}: {payload.describe_row(int(rows[i]))}" for i in worst
                if cos[i] < threshold]
    hint = ("same weights, other configuration (pooling / normalisation)" if same_weights
            and not same_config else "other weights" if recorded.get("weights_sha256")
            and not same_weights else "fingerprints agree" if same_weights else
            "the payload records no fingerprint (imported)")
    message = verdict(
        passed,
        f"the configured encoder reproduces the payload: min cosine {cos.min():.4f} "
        f"(mean {cos.mean():.4f}) over {len(rows)} texts >= {threshold}; {who}",
        f"ENCODER MISMATCH: re-embedding {len(rows)} payload texts gives min cosine "
        f"{cos.min():.3f} (mean {cos.mean():.3f}) to the stored vectors, below {threshold}; "
        f"{who}: {hint}. Queries embedded by this encoder will not find these vectors; rebuild "
        "the payload with it or configure the encoder the payload was built with")
    details.update(rows=rows.tolist(), cos_min=float(cos.min()), cos_mean=float(cos.mean()))
    return GuardResult(name, passed, rule, float(cos.min()), threshold, message, examples,
                       details, measure=MEASURE)
