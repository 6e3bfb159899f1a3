"""Drafter checkpoint → falcon-sar GGUF converter (ships as falcon_edge.convert; needs torch).

`run()` converts, `read_drafter_gguf()` / `load_drafter()` read a file back, `add_cli()` registers the
`falcon-edge convert` subcommand.
"""

from .convert_falcon_to_gguf import add_cli
from .read_gguf import load_drafter, read_drafter_gguf
from .write_gguf import ConversionError, run

__all__ = ["ConversionError", "add_cli", "load_drafter", "read_drafter_gguf", "run"]
