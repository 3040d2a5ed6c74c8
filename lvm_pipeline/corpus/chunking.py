"""Deterministic chunking: paragraphs, long ones cut at sentence ends, and the normalised
text under which two chunks count as the same.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkingConfig:
    # Shorter paragraphs are headings, captions or list debris, not prose worth predicting.
    min_words: int = 8
    # 64 words stay well inside MiniLM's 256-token window, and shorter chunks embed faster
    # (attention is quadratic); the figures: benchmarks/RESULTS.md, "Figures behind code defaults".
    max_words: int = 64


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(])")


def normalise_text(text: str) -> str:
    """Lower-case, alphanumerics only: the key under which two chunks count as the same text."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def text_sha256(text: str) -> str:
    return hashlib.sha256(normalise_text(text).encode()).hexdigest()


def chunk_text(text: str, config: ChunkingConfig) -> list[str]:
    """Split one article's text into chunks (see the module docstring for the rules)."""
    chunks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        if len(words) < config.min_words:
            continue
        if len(words) <= config.max_words:
            chunks.append(" ".join(words))
            continue
        piece: list[str] = []
        for sentence in _SENTENCE_END.split(" ".join(words)):
            sentence_words = sentence.split()
            if piece and len(piece) + len(sentence_words) > config.max_words:
                chunks.append(" ".join(piece))
                piece = []
            piece.extend(sentence_words)
            while len(piece) > config.max_words:  # one sentence longer than a chunk
                chunks.append(" ".join(piece[: config.max_words]))
                piece = piece[config.max_words :]
        if len(piece) >= config.min_words:
            chunks.append(" ".join(piece))
    return chunks

