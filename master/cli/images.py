"""``saltmarsh image build|list``: bootable Debian guest images in the master's file roots.

Both run on the master host and read master.yaml (``-c``) for ``file_roots`` and
``root_dir``; neither needs a running master. ``build`` needs root and the Debian mirror
(and PyPI for the agent's wheels); see README, Images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .output import clean, print_json
from .table import HELP

if TYPE_CHECKING:
    from saltmarsh.master.images.recipe import Recipe

MiB = 1024 * 1024


def register(sub: Any) -> None:
    """Add the ``image`` command family."""
    image = sub.add_parser("image", help=HELP["image"])
    actions = image.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build a bootable Debian guest image (qcow2) with the agent inside",
                               description="Build NAME.qcow2 (with NAME.qcow2.sha256 and NAME.recipe.json) "
                                           "into the first file root. Run as root on the master host.")
    build.add_argument("name", metavar="NAME", help="the image is NAME.qcow2, served as master://NAME.qcow2")
    build.add_argument("--release", help="Debian release (default bookworm)")
    build.add_argument("--size", help="the disk's virtual size, e.g. 4G (default 4G)")
    build.add_argument("--packages", help="extra Debian packages, comma-separated")
    build.add_argument("--kernel", help="cloud (linux-image-cloud-amd64, default) or generic (linux-image-amd64)")
    build.add_argument("--mirror", help="a Debian mirror URL (default: mmdebstrap's, with updates and security)")
    build.add_argument("--recipe", type=_path, help="build again from a NAME.recipe.json (every setting from it)")
    build.add_argument("--source", type=_path, help="the saltmarsh source tree (default: the one installed)")
    build.add_argument("--cache-dir", type=_path, help="the .deb and build cache (default <root_dir>/image-build)")
    build.add_argument("--force", action="store_true", help="replace an existing NAME.qcow2")
    build.add_argument("--refresh", action="store_true", help="make the Debian base anew (else reused for a week)")
    build.add_argument("--json", action="store_true")
    build.set_defaults(handler=image_build)
    listing = actions.add_parser("list", help="every image under the file roots: size, format, sha256, agents")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=image_list)


def _path(text: str) -> Path:
    """An argument type: a path that is not empty (``Path("")`` would silently be the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def image_build(args: argparse.Namespace) -> int:
    """Build the image; progress on stderr, the result on stdout."""
    # Imported here: the other commands need none of the build's modules.
    from saltmarsh.master.images import source
    from saltmarsh.master.images.build import BuildRequest, build, preflight
    from saltmarsh.master.images.recipe import check_name

    from ..config import load_master_config

    # The arguments first (each refusal names the one at fault), then the host and its config.
    check_name(args.name)
    recipe = _recipe(args)
    config = load_master_config(args.config_dir)
    file_root = preflight(args.name, config.file_roots, args.force)
    tree = source.check_tree(args.source.resolve()) if args.source else source.installed_tree()
    cache_dir = args.cache_dir.resolve() if args.cache_dir else config.root_dir / "image-build"
    request = BuildRequest(name=args.name, recipe=recipe, file_root=file_root, source=tree, cache_dir=cache_dir,
                           force=args.force, pinned_source=args.recipe is not None, refresh=args.refresh)
    result = build(request, lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        print_json(result.summary())
    else:
        print(f"{result.path}: {result.size / MiB:.0f} MiB qcow2 ({result.virtual_size / MiB / 1024:g} GiB disk), "
              f"sha256 {result.sha256}, {result.seconds:.0f} s; use it as master://{result.path.name}")
    return 0


def _recipe(args: argparse.Namespace) -> Recipe:
    from saltmarsh.master.images.errors import BuildRefused
    from saltmarsh.master.images.recipe import (
        DEFAULT_KERNEL,
        DEFAULT_MIRROR,
        DEFAULT_RELEASE,
        DEFAULT_SIZE,
        parse_packages,
        parse_size,
        recipe_from_file,
    )

    settings = {"--release": args.release, "--size": args.size, "--packages": args.packages,
                "--kernel": args.kernel, "--mirror": args.mirror}
    if args.recipe is not None:
        given = [flag for flag, value in settings.items() if value is not None]
        if given:
            raise BuildRefused(f"--recipe takes every setting from its file: drop {', '.join(given)}")
        return recipe_from_file(args.recipe)
    # The source's hash is filled in by the build, from the tree it copied.
    def setting(value: str | None, default: str) -> str:
        return default if value is None else value  # "" is a value, refused where it is no setting

    from saltmarsh.master.images.recipe import Recipe

    return Recipe.make(release=setting(args.release, DEFAULT_RELEASE),
                       size=DEFAULT_SIZE if args.size is None else parse_size(args.size),
                       packages=parse_packages(setting(args.packages, "")),
                       kernel=setting(args.kernel, DEFAULT_KERNEL),
                       mirror=setting(args.mirror, DEFAULT_MIRROR), source_sha256="0" * 64)


def image_list(args: argparse.Namespace) -> int:
    """Print every image under the file roots."""
    from saltmarsh.master.cloud.fileserver import SERVED_RECORDS
    from saltmarsh.master.images.catalog import catalog

    from ..config import load_master_config

    config = load_master_config(args.config_dir)
    entries = catalog(config.file_roots, config.root_dir / SERVED_RECORDS)  # reads the records even with no roots
    if args.json:
        print_json([entry.summary() for entry in entries])
        return 0
    if not config.file_roots:
        print("no file_roots in master.yaml")
        return 0
    print(f"{'IMAGE':<32} {'FORMAT':<6} {'SIZE':>9} {'VIRTUAL':>9} {'SHA256':<16} FETCHED BY")
    for entry in entries:
        virtual = f"{entry.virtual_size / MiB:.0f}M" if entry.virtual_size is not None else "?"
        agents = ",".join(entry.fetched_by) or "-"
        if entry.asked_by:
            agents += f" (asked only: {','.join(entry.asked_by)})"
        if not entry.served:
            agents += f" [not served: shadowed by an earlier root than {entry.root}]"
        print(f"{clean(entry.path):<32} {clean(entry.format):<6} {entry.size / MiB:>8.0f}M {virtual:>9} "
              f"{entry.sha256[:16]:<16} {clean(agents)}")
    return 0
