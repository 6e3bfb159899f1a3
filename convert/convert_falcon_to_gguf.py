"""Command line of the converter: `falcon-edge convert` or `python -m falcon_edge.convert.convert_falcon_to_gguf`.

Parses arguments and calls write_gguf.run(); nothing else lives here.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from falcon_edge import gguf_schema

from .write_gguf import OUTTYPES, run


def _parents(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"tree parents must be comma-separated integers, got {text!r}") from e


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="torch.save file: FalconDrafter checkpoint or a Falcon / EAGLE-1 state dict")
    parser.add_argument("--target", required=True, help="the target model GGUF the drafter runs with")
    parser.add_argument("-o", "--out", required=True, help="the drafter GGUF to write")
    parser.add_argument("--outtype", choices=list(OUTTYPES), default="f16", help="type of the weight matrices (default f16)")
    parser.add_argument("--block-size", type=int, help="k, tokens per drafter pass (default: the checkpoint's, else 2)")
    parser.add_argument("--fusion", choices=list(gguf_schema.FUSIONS), help="expected fusion, checked against the weights")
    parser.add_argument("--draft-vocab", metavar="NPY", help=".npy array of target token ids forming the draft vocabulary (d2t)")
    parser.add_argument("--tree-parents", type=_parents, metavar="P0,P1,...", help="decoding tree to store: parent per node, -1 = root")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the conversion described by parsed arguments; returns the exit status."""
    out = run(
        args.checkpoint,
        args.target,
        args.out,
        outtype=args.outtype,
        block_size=args.block_size,
        fusion=args.fusion,
        draft_vocab=None if args.draft_vocab is None else np.load(args.draft_vocab),
        tree_parents=args.tree_parents,
        progress=not args.no_progress,
    )
    print(f"wrote {out}")
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register the `convert` subcommand on an argparse subparsers object; it dispatches through `func`."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a trained drafter checkpoint to a falcon-sar GGUF",
        description="Convert a trained drafter checkpoint to a falcon-sar GGUF for one target model.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point."""
    parser = argparse.ArgumentParser(prog="convert_falcon_to_gguf", description="Convert a trained drafter checkpoint to a falcon-sar GGUF.")
    _add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
