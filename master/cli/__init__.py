"""``saltmarsh``: the operator's command line.

``main`` first offers the command to the fast path (fast.py: ``run TARGET FUN`` in its plain forms,
stdlib only, over the control stream socket); anything it does not take goes to the full CLI
(full.py: the argparse tree, one module per command family, over the ZeroMQ control socket). Both
print the same and exit the same way. This ``__init__`` imports nothing, because every module of the
package (fast.py among them) is imported after it.

Exit status: 0 success; 1 a job left agents silent or failed, or the master refused or did not
answer; 2 bad usage (see full.py).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saltmarsh`` command."""
    words = sys.argv[1:] if argv is None else argv
    from .fast import run_fast

    status = run_fast(words)
    if status is not None:
        return status
    from .full import main as full_main

    return full_main(words)
