"""``python -m matengine.workflows.detached RUN_ID``: the in-process worker of one run, in a
process of its own. ``matengine complete … --detach`` without a broker starts it, so the run
goes on after the command has returned (its heartbeat says whether it still does)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import matengine.workflows.registry  # noqa: F401  (registers the workflow kinds)
    from matengine.db.connection import get_engine
    from matengine.workflows.engine import execute_inline

    run = execute_inline(get_engine(), int(argv[0]))
    print(f"run {run.id} {run.kind}: {run.state}", flush=True)
    return 0 if run.state == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
