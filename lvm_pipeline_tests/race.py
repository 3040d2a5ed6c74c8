"""A deterministic interleaving of two overlapping runs, for the lineage race tests.

Run A rebuilds from a new corpus (``corpus*``); run B, started while A runs, rebuilds the
training sequences and everything downstream of them (``aligned_training_sequences*``). The
barriers force the order in which the old ``CURRENT`` pointer mixed their builds:

1. B's ``aligned_training_sequences`` step has resolved its payload (the old one, P0) and then
   waits until A has published its new payload P1 (CURRENT moves under B's running step);
2. A's ``aligned_eval`` and ``faiss_index`` wait until B's report has resolved its inputs, so
   B's report reads the eval set and index of P0, while A's sequences are published while B's
   models train (where a pointer read would hand them A's sequences).

Each run is its own process (lvm_pipeline_tests/race_run.py, the webserver's run worker, or the
test process running `lvm materialize`), with a fixed role; the barriers are files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

A_PAYLOAD_PUBLISHED = "a_payload_published"
B_SEQUENCES_STARTED = "b_sequences_started"
B_REPORT_STARTED = "b_report_started"
TIMEOUT_S = 600.0


class Barriers(Protocol):
    def set(self, name: str) -> None: ...
    def wait(self, name: str) -> None: ...


class FileBarriers:
    """Barriers between processes: a barrier is set when its file exists."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def set(self, name: str) -> None:
        (self.folder / name).touch()

    def wait(self, name: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not (self.folder / name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"race barrier {name} never set")
            time.sleep(0.2)


def install(patch: Callable[[Any, str, Any], None], role: Callable[[], str | None],
            barriers: Barriers) -> None:
    """Wrap the domain calls of the asset modules with the barriers (``patch`` is
    ``monkeypatch.setattr`` in a test, ``setattr`` in the webserver's code location)."""
    from lvm_pipeline.defs.assets import index, payload, report, sequences
    from lvm_pipeline.defs.io_manager import BuildIOManager

    build_payload, handle_output = payload.build_payload, BuildIOManager.handle_output
    build_windows, publish_index = sequences.build_windows, index.publish_index
    build_report = report.build_report

    def payload_after_b_started(*args: Any, **kwargs: Any) -> Any:
        if role() == "A":
            barriers.wait(B_SEQUENCES_STARTED)
        return build_payload(*args, **kwargs)

    def handle_output_then_signal(self: BuildIOManager, context: Any, obj: Any) -> None:
        handle_output(self, context, obj)  # CURRENT now names A's payload
        if role() == "A" and obj.kind == "payload":
            barriers.set(A_PAYLOAD_PUBLISHED)

    def windows_interleaved(*args: Any, drop_near_duplicates: bool, **kwargs: Any) -> Any:
        if role() == "B" and drop_near_duplicates:  # B's training sequences, inputs resolved
            barriers.set(B_SEQUENCES_STARTED)
            barriers.wait(A_PAYLOAD_PUBLISHED)
        if role() == "A" and not drop_near_duplicates:  # A's eval set
            barriers.wait(B_REPORT_STARTED)
        return build_windows(*args, drop_near_duplicates=drop_near_duplicates, **kwargs)

    def index_after_b_report(*args: Any, **kwargs: Any) -> Any:
        if role() == "A":
            barriers.wait(B_REPORT_STARTED)
        return publish_index(*args, **kwargs)

    def report_signals_start(*args: Any, **kwargs: Any) -> Any:
        if role() == "B":  # its inputs were resolved when the step started
            barriers.set(B_REPORT_STARTED)
        return build_report(*args, **kwargs)

    patch(payload, "build_payload", payload_after_b_started)
    patch(BuildIOManager, "handle_output", handle_output_then_signal)
    patch(sequences, "build_windows", windows_interleaved)
    patch(index, "publish_index", index_after_b_report)
    patch(report, "build_report", report_signals_start)


def write_text_corpus(folder: Path, articles: int = 16, paragraphs: int = 8) -> Path:
    """A folder of ``.txt`` articles (the ``text_dir`` source), real-ish prose per article.

    One chunk per paragraph. Small, because run A embeds, trains on and reports over all of
    it, and the race only needs A to publish a new payload: 16 articles of 8 paragraphs (3
    windows each) still leave windows in every split and pass every blocking check with
    room to spare, for less than half of A's time on 40 articles of 12."""
    folder.mkdir(parents=True, exist_ok=True)
    topics = ["rivers", "bridges", "compilers", "orchards", "glaciers", "printing presses",
              "lighthouses", "railways", "violins", "beehives"]
    for a in range(articles):
        topic = topics[a % len(topics)]
        text = "\n\n".join(
            f"Part {p} of the notes on {topic} number {a}. The {topic} described here differ "
            f"in age, size and purpose; section {p} looks at how the {topic} of region {a} "
            f"changed over {p + 2} decades, what their builders measured, and which of the "
            f"{topic} survived the floods of year {1900 + a + p}."
            for p in range(paragraphs))
        (folder / f"article_{a:03d}.txt").write_text(f"Notes on {topic} {a}\n\n{text}\n")
    return folder
