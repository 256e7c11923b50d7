"""``python -m solo.zoo list | download | convert | hash``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from solo.zoo.checkpoints import CheckpointError, load_pretrained
from solo.zoo.convert import TARGETS, convert_pretrained
from solo.zoo.download import DownloadError, sha256_of
from solo.zoo.hub import DIR_VARIABLE, default_dir, download_entry
from solo.zoo.manifest import MANIFEST_VARIABLE, URL_VARIABLE, ManifestError, read_manifest


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cmd_list(args: argparse.Namespace) -> None:
    zoo = read_manifest(args.manifest)
    entries = zoo.for_dataset(args.dataset) if args.dataset else zoo.entries
    if not entries:
        print(f"no published checkpoints in {zoo.path} yet (datasets covered: "
              f"{', '.join(zoo.datasets)}); pass --manifest FILE for your own")
        return
    print(f"{'name':40} {'method':10} {'backbone':10} {'dataset':12} {'linear':>7} {'knn':>7}")
    for e in entries:
        print(f"{e.name:40} {e.method:10} {e.backbone:10} {e.dataset:12} "
              f"{_accuracy(e.linear_acc1):>7} {_accuracy(e.knn_acc1):>7}")


def cmd_download(args: argparse.Namespace) -> None:
    zoo = read_manifest(args.manifest)
    entries = zoo.for_dataset(args.dataset) if args.dataset else [zoo.get(args.name)]
    for entry in entries:
        path = download_entry(entry, zoo, args.dir, args.base_url, progress=not args.quiet)
        print(path)


def cmd_convert(args: argparse.Namespace) -> None:
    try:
        kwargs = json.loads(args.backbone_kwargs) if args.backbone_kwargs else None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"--backbone-kwargs is not JSON: {err}") from None
    if kwargs is not None and not isinstance(kwargs, dict):
        raise CheckpointError(f"--backbone-kwargs must be a JSON object, got "
                              f"{args.backbone_kwargs}")
    pretrained = load_pretrained(args.checkpoint, backbone=args.backbone,
                                 cifar_stem=args.cifar_stem, backbone_kwargs=kwargs)
    out, recipe = convert_pretrained(pretrained, args.to, args.out)
    print(out)
    if recipe:  # stdout stays the path alone, for scripts
        print(f"load it with: {recipe}.load_state_dict(torch.load({str(out)!r}))", file=sys.stderr)


def cmd_hash(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if not path.is_file():
        raise DownloadError(f"'{path}' is not a file")
    # the two fields a manifest entry needs about the file itself
    print(json.dumps({"url": path.name, "sha256": sha256_of(path), "size": path.stat().st_size}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m solo.zoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    manifest_help = f"a manifest of your own (default: ${MANIFEST_VARIABLE}, else solo's)"

    listing = commands.add_parser("list", help="the checkpoints of the manifest")
    listing.add_argument("--dataset")
    listing.add_argument("--manifest", help=manifest_help)
    listing.set_defaults(run=cmd_list)

    fetching = commands.add_parser("download", help="download and verify checkpoints")
    which = fetching.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="a checkpoint name from `list`")
    which.add_argument("--dataset", help="every checkpoint of this dataset")
    fetching.add_argument("--dir", default=None,
                          help=f"where to put them (default: ${DIR_VARIABLE}, else {default_dir()})")
    fetching.add_argument("--base-url", help=f"a mirror to fetch from (default: ${URL_VARIABLE}, "
                                             "else the manifest's base_url)")
    fetching.add_argument("--manifest", help=manifest_help)
    fetching.add_argument("--quiet", action="store_true", help="no progress bar")
    fetching.set_defaults(run=cmd_download)

    converting = commands.add_parser("convert", help="write a checkpoint for another library")
    converting.add_argument("checkpoint")
    converting.add_argument("--to", required=True, choices=TARGETS)
    converting.add_argument("--out", required=True)
    converting.add_argument("--backbone", help="override the backbone the checkpoint implies")
    converting.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None,
                            help="override the stem the checkpoint implies")
    converting.add_argument("--backbone-kwargs", metavar="JSON",
                            help='builder kwargs added to the config\'s, e.g. \'{"img_size": 32}\'')
    converting.set_defaults(run=cmd_convert)

    hashing = commands.add_parser("hash", help="sha256 and size of a file, for a manifest entry")
    hashing.add_argument("file")
    hashing.set_defaults(run=cmd_hash)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ManifestError, DownloadError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
