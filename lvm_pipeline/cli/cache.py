"""``lvm cache``: what the embedding cache holds, how much the last payload build took from it,
and ``--prune`` to remove the entries no payload build in the data dir uses."""

from __future__ import annotations

import argparse

from lvm_pipeline.cli.common import EXIT_OK, CliError, add_command, open_cli_store, resolve_data_dir


def cmd_cache(args: argparse.Namespace) -> int:
    from lvm_pipeline.embedding import EmbeddingCache

    data_dir = resolve_data_dir(args.data_dir)
    store = open_cli_store(data_dir)
    cache = EmbeddingCache.of_store(store)
    if not cache.root.is_dir():
        raise CliError(f"no embedding cache under {data_dir}: a payload build makes one "
                       "(`lvm run`)")
    if args.prune:
        removed, freed = cache.prune(store)
        print(f"lvm cache: removed {removed} entries ({freed / 1e6:.1f} MB) that no payload "
              f"build under {data_dir} uses")
    folders = cache.folders()
    print(f"embedding cache {cache.root}: {sum(f.entries for f in folders)} entries, "
          f"{sum(f.bytes for f in folders) / 1e6:.1f} MB")
    for f in folders:
        e = f.encoder
        print(f"  {f.fingerprint[:12]}  {f.entries:>9} entries  {f.shards:>6} shards  "
              f"{f.bytes / 1e6:>8.1f} MB  weights {str(e.get('weights_sha256'))[:12]} "
              f"{e.get('precision')} on {e.get('device_type')}, {e.get('dim')}-d")
    last = cache.last_build()
    if last is None:
        print("last build: none recorded")
    else:
        print(f"last build: payload {last['payload_build_id'][:12]} at {last['at']}: "
              f"{last['hits']}/{last['texts']} texts from the cache "
              f"(hit rate {100 * last['hit_rate']:.1f} %), {last['misses']} embedded, "
              f"{len(last['corrupt_shards'])} corrupt shard(s) re-embedded")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    cache = add_command(
        sub, "cache", "Show the embedding cache (entries, size per encoder, the hit rate of the "
                      "last payload build); --prune removes entries no payload build uses.",
        epilog="Vectors live under DATA_DIR/embedding_cache/, one folder per encoder "
               "fingerprint.\nExit codes: 0 success, 1 no cache under the data dir, or --prune "
               "while a payload build is filling the cache.")
    cache.add_argument("--prune", action="store_true",
                       help="remove every entry whose text is in no payload build of this "
                            "encoder under the data dir (refused while a build runs)")
    cache.set_defaults(func=cmd_cache)
