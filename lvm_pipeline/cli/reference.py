"""The reference project's formats: ``lvm import-training``, ``lvm export-training`` and
``lvm import-payload`` (the explicit, opt-in conversion of its pickled payload)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvm_pipeline.cli.common import (
    EXIT_OK,
    CliError,
    add_command,
    exit_code,
    open_cli_store,
    resolve_data_dir,
    run_quietly,
)
from lvm_pipeline.store import kinds

TRAIN_ASSET = "aligned_training_sequences"


def _existing(path: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise CliError(f"{resolved}: file does not exist")
    return resolved


def cmd_import_training(args: argparse.Namespace) -> int:
    import dagster as dg

    from lvm_pipeline.cli.events import print_check_table
    from lvm_pipeline.cli.run_config import TrainingSequencesParams, run_config
    from lvm_pipeline.models import VARIANTS

    data_dir = resolve_data_dir(args.data_dir)
    npz = _existing(args.path)
    selection = dg.AssetSelection.assets(TRAIN_ASSET, *(VARIANTS if args.train else ()))
    config = run_config(sequences=TrainingSequencesParams(import_npz=str(npz)))
    result = run_quietly(data_dir, selection, config)
    return exit_code(print_check_table(
        result, f"lvm import-training: {npz} → {data_dir} (run {result.run_id})",
        debug=args.debug))


def cmd_export_training(args: argparse.Namespace) -> int:
    from lvm_pipeline.guards import GuardError, check_alignment, check_truth_keys, require_passed
    from lvm_pipeline.interop import export_training_npz
    from lvm_pipeline.payload import current_payload
    from lvm_pipeline.sequences import load_sets, require_payload
    from lvm_pipeline.store import ArtifactError, code_version, utc_now

    store = open_cli_store(resolve_data_dir(args.data_dir))
    out = Path(args.path).expanduser().resolve()
    if not out.parent.is_dir():
        raise CliError(f"{out.parent}: folder does not exist")
    try:
        payload = current_payload(store)
        build = store.current(kinds.EVAL_SEQUENCES if args.split == "eval" else kinds.TRAIN_SEQUENCES)
        require_payload(build, payload)
        sets = load_sets(build)
        # Exporting broken windows would hand the bug to whoever reads the file.
        require_passed([check_alignment(payload, sets), check_truth_keys(payload, sets)])
    except (ArtifactError, GuardError) as err:
        raise CliError(f"refusing to export: {err}") from None
    provenance = {"exported_by": "lvm export-training", "exported_at": utc_now(),
                  "code_version": code_version(), "payload_build_id": payload.build_id,
                  "sequences_build_id": build.build_id, "sequences_kind": build.kind,
                  "embedder": payload.manifest.get("embedder"),
                  "source": build.manifest.get("source")}
    export_training_npz(out, payload, sets, provenance)
    counts = ", ".join(f"{s} {len(v)}" for s, v in sets.items())
    print(f"wrote {out}: {sum(len(v) for v in sets.values())} windows ({counts}) of "
          f"{build.kind} {build.build_id[:12]} over payload {payload.build_id[:12]}, "
          "with truth_keys and provenance")
    return EXIT_OK


def cmd_import_payload(args: argparse.Namespace) -> int:
    import dagster as dg

    from lvm_pipeline.cli.events import print_check_table
    from lvm_pipeline.cli.run_config import PayloadParams, run_config
    from lvm_pipeline.interop.reference_payload import require_pickled

    data_dir = resolve_data_dir(args.data_dir)
    npy = _existing(args.path)
    # Its header says whether the file needs pickle at all (nothing is unpickled to read it):
    # a plain or truncated .npy is refused for what it is, not sent for --allow-pickle.
    require_pickled(npy)
    if not args.allow_pickle:
        raise CliError(f"{npy}: holds pickled objects (the reference payload is a pickled "
                       "dict), and unpickling executes code stored in the file. Nothing was "
                       "unpickled. If you trust where it came from, convert it explicitly: add "
                       "--allow-pickle")
    print(f"lvm import-payload: unpickling {npy} (--allow-pickle: this executes code stored in "
          "the file); the result is written in our pickle-free format", file=sys.stderr)
    selection = dg.AssetSelection.assets("payload")
    if args.downstream:
        selection = selection.downstream()
    from lvm_pipeline.defs.resources import PickleImportsResource

    config = run_config(payload=PayloadParams(import_npy=str(npy), allow_pickle=True,
                                              normalise=args.normalise))
    # This command's explicit flag is what allows the unpickling, for this run alone.
    result = run_quietly(data_dir, selection, config,
                         {"pickle_imports": PickleImportsResource(allowed=True)})
    return exit_code(print_check_table(
        result, f"lvm import-payload: {npy} → {data_dir} (run {result.run_id})",
        debug=args.debug))


def register(sub: argparse._SubParsersAction) -> None:
    imp = add_command(sub, "import-training",
                      "Import a reference-layout training set (.npz: context_sequences [N,5,D], "
                      "target_vectors [N,D], optional truth_keys [N,2], provenance) as "
                      "aligned_training_sequences: every target and context vector is aligned "
                      "to its nearest payload row and the blocking checks decide; prints the "
                      "check table, exit 1 when blocked.")
    imp.add_argument("path", metavar="PATH.npz", help="the training set to import")
    imp.add_argument("--train", action="store_true",
                     help="also train the five models on it when every check passes")
    imp.set_defaults(func=cmd_import_training)

    exp = add_command(sub, "export-training",
                      "Write the current training (or eval) windows as a reference-layout .npz "
                      "with truth_keys and provenance (JSON); refuses windows that fail the "
                      "alignment or truth-key guards.")
    exp.add_argument("path", metavar="PATH.npz", help="where to write")
    exp.add_argument("--split", choices=("train", "eval"), default="train",
                     help="train = the train and val windows (default); eval = the eval windows")
    exp.set_defaults(func=cmd_export_training)

    pay = add_command(sub, "import-payload",
                      "Convert the reference project's payload (.npy of a pickled dict "
                      "{id: (text, meta, vector)}) into a payload build; refused unless "
                      "--allow-pickle, because unpickling executes code from the file. Prints "
                      "the payload checks (integrity, embedder canary).")
    pay.add_argument("path", metavar="PATH.npy", help="the reference payload")
    pay.add_argument("--allow-pickle", action="store_true",
                     help="unpickle the file (executes code stored in it: trusted files only)")
    pay.add_argument("--normalise", action="store_true",
                     help="L2-normalise the imported vectors (recorded in the manifest)")
    pay.add_argument("--downstream", action="store_true",
                     help="also rebuild everything downstream of the payload (sequences, "
                          "models, index, report), gated by the blocking checks")
    pay.set_defaults(func=cmd_import_payload)
