"""The closing summary of ``make demo``: the newest train.py sweep's table (per seed: held-out Pearson, its label
ceiling rho_max, the self-consistency score, selected or not), the registered version, where the files are and
the link to the runs table.

    python -m tglassmlp.ensemble.report [--sweeps outputs/hydra/train] [--path NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tglassmlp.ensemble.manifest import MANIFEST_NAME, load_manifest
from tglassmlp.ensemble.selection import format_summary
from tglassmlp.ensemble.sources import latest_sweep


def registered_version(manifest: dict, sweep) -> str | None:
    """The registry line of a sweep (its parent run's tag ``ensemble.registered``), None when it registered
    nothing or the store cannot be read."""
    from tglassmlp.tracking import make_client, read_sweep_parent

    parent = read_sweep_parent(sweep)
    if parent is None:
        return None
    try:
        tag = make_client(parent["tracking_uri"]).get_run(parent["run_id"]).data.tags.get("ensemble.registered")
    except Exception:  # noqa: BLE001 - a summary line only
        return None
    return tag


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", default="outputs/hydra/train", help="train.py's multirun folders")
    parser.add_argument("--path", action="append", default=[], metavar="NAME=PATH",
                        help="a line 'NAME: PATH' under the table (repeatable)")
    args = parser.parse_args(argv)
    sweep = latest_sweep(args.sweeps, needs="manifest")
    if sweep is None:
        print(f"no train.py sweep with an {MANIFEST_NAME} under {args.sweeps}", file=sys.stderr)
        return 1
    from tglassmlp.tracking import ui_link

    manifest = load_manifest(sweep / MANIFEST_NAME)
    paths = [tuple(p.split("=", 1)) for p in args.path if "=" in p]
    print(format_summary(manifest, sweep / MANIFEST_NAME, registered=registered_version(manifest, sweep),
                         ui_link=ui_link(manifest.get("experiment_id"), manifest.get("tracking_uri")), paths=paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
