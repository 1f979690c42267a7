"""Command line: ``python -m convexlib.data {fetch,verify,images} [--root DIR]``.

fetch    download the public files into the data-root layout, each checked against its sha256
verify   check an existing data root against the pinned / recorded hashes (no network)
images   print where the THINGS images come from and how to place them
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConvexlibError
from .fetch import GROUPS, fetch, verify
from .images import THINGS_IMAGES_HOWTO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convexlib.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="download the public data files (checksummed)")
    p_fetch.add_argument("--root", help="data root to fill (default $CONVEXLIB_DATA or <repo>/data)")
    p_fetch.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                         help=f"only these groups: {', '.join(GROUPS)}")
    p_fetch.add_argument("--skip", nargs="+", choices=GROUPS, metavar="GROUP", default=[], help="leave these groups out")
    p_fetch.add_argument("--mirror", help="base URL (https:// or file://) laid out like the data root")
    p_fetch.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a connection (default 10)")
    p_fetch.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_verify = sub.add_parser("verify", help="check a data root against the known hashes (offline)")
    p_verify.add_argument("--root", help="data root (default $CONVEXLIB_DATA or <repo>/data)")
    sub.add_parser("images", help="how to get the THINGS images")
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            groups = [g for g in (args.only or GROUPS) if g not in args.skip]
            files = fetch(args.root, groups=groups, mirror=args.mirror, timeout=args.timeout,
                          progress=not args.no_progress)
            print(f"\n{len(files)} file(s) present and verified.\n")
            print(THINGS_IMAGES_HOWTO)
            return 0
        if args.command == "verify":
            status = verify(args.root)
            for path, state in status.items():
                print(f"{state:9s} {path}")
            bad = [p for p, s in status.items() if s == "mismatch"]
            return 1 if bad else 0
        print(THINGS_IMAGES_HOWTO)
        return 0
    except ConvexlibError as exc:  # includes FetchError and DataNotFoundError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
