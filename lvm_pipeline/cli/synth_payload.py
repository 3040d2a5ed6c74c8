"""``lvm synth-payload``: a seeded synthetic payload at the reference project's scale.

Writes a payload build (vectors.npy, chunks.parquet with placeholder texts, a manifest whose
embedder block says ``synthetic``) into the data dir OUT, so that ``lvm run --payload OUT`` and
``benchmarks/bench_scale.py`` measure every later stage at 584k chunks without embedding
anything. See :mod:`lvm_pipeline.synthetic.payload` for the structure.
"""

from __future__ import annotations

import argparse
import sys

from lvm_pipeline.cli.common import EXIT_OK, CliError, add_command, open_cli_store, resolve_data_dir

# The config fields that are options (the structure's knobs: lvm_pipeline.synthetic.payload).
FIELDS = ("articles", "chunks", "dim", "seed", "dtype", "median_chunks", "p95_chunks",
          "adjacent_cosine", "article_cosine", "random_cosine", "spectrum_decay", "theme_weight",
          "theme_stay", "theme_revisit", "chunks_per_theme")


def cmd_synth_payload(args: argparse.Namespace) -> int:
    from lvm_pipeline.runtime import make_progress
    from lvm_pipeline.store import ArtifactError
    from lvm_pipeline.synthetic import SyntheticPayloadConfig, publish_synthetic_payload

    if args.out and args.data_dir and resolve_data_dir(args.out) != resolve_data_dir(args.data_dir):
        raise CliError(f"OUT {args.out} and --data-dir {args.data_dir} differ; give one")
    out = resolve_data_dir(args.out or args.data_dir)
    try:
        config = SyntheticPayloadConfig(**{f: getattr(args, f) for f in FIELDS})
        store = open_cli_store(out)
        store.ensure_writable()
        progress = make_progress("generating", lambda line: print(line, file=sys.stderr),
                                 bar=sys.stderr.isatty(), unit="chunks")
        build = publish_synthetic_payload(store, config, progress)
        store.set_current(build)  # OUT is a data dir whose payload `lvm run --payload` takes
    except (ValueError, ArtifactError) as err:
        raise CliError(str(err)) from None
    m = build.manifest["source"]["measured"]
    targets = build.manifest["source"]["neighbour_targets"]
    size = build.manifest["files"]["vectors.npy"]["bytes"]
    print(f"synthetic payload {build.build_id[:12]} at {build.path}\n"
          f"  {config.chunks:,} chunks × {config.dim} {config.dtype} ({size / 1e9:.2f} GB) in "
          f"{config.articles:,} articles (length median {m['article_length_median']:.0f}, p95 "
          f"{m['article_length_p95']:.0f}, max {m['article_length_max']}); adjacent-chunk "
          f"cosine {m['adjacent_cosine_mean']:.3f}; {build.manifest['run']['seconds']:.0f} s\n"
          f"  neighbours (measured / real target): "
          + ", ".join(f"{k} {v:.3f} / {targets[k]:.3f}" for k, v in targets["measured"].items())
          + "\n"
          f"  use it: lvm run --payload {out}   (or benchmarks/bench_scale.py --data-dir {out})")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    from lvm_pipeline.synthetic import SyntheticPayloadConfig as Defaults

    parser = add_command(sub, "synth-payload", "Write a seeded synthetic payload (reference "
                                               "article structure, placeholder texts) to OUT.")
    parser.add_argument("out", nargs="?", metavar="OUT",
                        help="data dir to publish into (default: --data-dir)")
    parser.add_argument("--articles", type=int, default=Defaults.articles)
    parser.add_argument("--chunks", type=int, default=Defaults.chunks)
    parser.add_argument("--dim", type=int, default=Defaults.dim)
    parser.add_argument("--seed", type=int, default=Defaults.seed)
    parser.add_argument("--dtype", choices=("float32", "float16"), default=Defaults.dtype,
                        help="storage of vectors.npy (float16: half the size)")
    parser.add_argument("--median-chunks", type=float, default=Defaults.median_chunks,
                        help="median article length in chunks")
    parser.add_argument("--p95-chunks", type=float, default=Defaults.p95_chunks,
                        help="95th percentile of article length in chunks")
    parser.add_argument("--adjacent-cosine", type=float, default=Defaults.adjacent_cosine,
                        help="nominal cosine between consecutive chunks of an article")
    parser.add_argument("--article-cosine", type=float, default=Defaults.article_cosine,
                        help="nominal cosine between far-apart chunks of one article")
    parser.add_argument("--random-cosine", type=float, default=Defaults.random_cosine,
                        help="nominal cosine between chunks of different articles")
    parser.add_argument("--spectrum-decay", type=float, default=Defaults.spectrum_decay,
                        help="variance of coordinate i falls as i**-decay (0: isotropic)")
    parser.add_argument("--theme-weight", type=float, default=Defaults.theme_weight,
                        help="variance share of the theme shared across articles (0: none)")
    parser.add_argument("--theme-stay", type=float, default=Defaults.theme_stay,
                        help="probability that a chunk keeps the previous chunk's theme")
    parser.add_argument("--theme-revisit", type=float, default=Defaults.theme_revisit,
                        help="probability that a theme change returns to an earlier theme of "
                             "the article")
    parser.add_argument("--chunks-per-theme", type=float, default=Defaults.chunks_per_theme,
                        help="payload chunks per theme in the dictionary")
    parser.set_defaults(func=cmd_synth_payload)
