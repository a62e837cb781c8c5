"""Copy a generated dataset into a compact, shippable one (e.g. outputs/datasets/demo -> data/demo).

Only the fields that are expensive to recompute are kept (structures and labels); descriptors are cheap
(~0.2 s per N = 1290 structure) and are recomputed on load and cached under outputs/.

    python -m tglassmlp.data.export outputs/datasets/demo data/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tglassmlp.data.shards import open_shard, parse_shard_path, read_shard, write_shard

# bond_breaking (per run) is kept: it gives the run-to-run noise ceiling rho_max of the Pearson correlation
SHIPPED_FIELDS = ("positions", "types", "inherent_positions", "particle_energies", "times", "bond_breaking",
                  "propensity")


def export_dataset(source, destination, fields=SHIPPED_FIELDS, *, overwrite: bool = False) -> list[Path]:
    """Write every shard of ``source`` to ``destination`` with only ``fields`` (those present); returns the paths.

    A shard already exported with every field the source now has is skipped unless ``overwrite``; one
    whose source has gained stages since (a dataset still being generated) is exported again. Each write
    is atomic (write_shard).
    """
    source, destination = Path(source), Path(destination)
    shards = sorted(source.glob("T*/s*.h5"))
    if not shards:
        raise FileNotFoundError(f"no shards (T*/s*.h5) under {source}")
    written = []
    for path in shards:
        parse_shard_path(path)  # refuses names outside the convention
        target = destination / path.relative_to(source)
        with open_shard(path) as reader:
            wanted = [name for name in fields if name in reader.fields]
        if target.exists() and not overwrite:
            with open_shard(target) as reader:
                if set(reader.fields) == set(wanted):
                    continue
        shard = read_shard(path, fields=wanted)
        kept = {name: shard[name] for name in wanted}
        attrs = {k: v for k, v in shard.attrs.items() if k not in ("n_particles", "created", "updated",
                                                                    "format_version")}
        target.parent.mkdir(parents=True, exist_ok=True)
        # per-field attributes travel with their field (descriptor names and the settings hash they were
        # computed with: without the hash, stored descriptors would be read as of unknown settings)
        field_attrs = {name: dict(a) for name, a in shard.field_attrs.items() if name in kept and a}
        written.append(write_shard(target, kept, attrs, field_attrs=field_attrs, overwrite=True))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    written = export_dataset(args.source, args.destination, overwrite=args.overwrite)
    size = sum(p.stat().st_size for p in Path(args.destination).glob("T*/s*.h5"))
    print(f"exported {len(written)} shard(s) to {args.destination} ({size / 2**20:.1f} MiB in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
