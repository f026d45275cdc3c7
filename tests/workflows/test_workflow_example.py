"""The worked example of docs/workflows.md is true: its code block, registered as written,
runs as a workflow on the in-process worker and counts exactly the rows of the dataset."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from matengine.workflows import engine as wf
from matengine.workflows import params as wp
from matengine.workflows.submit import submit_params, wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "workflows.md"


def _example_module() -> dict:
    block = re.search(r"```python\n(# matengine/workflows/count_rows.py\n.*?)```", DOC.read_text(), re.S)
    assert block is not None, "the worked example is missing from docs/workflows.md"
    module = types.ModuleType("count_rows_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(block.group(1), str(DOC), "exec"), module.__dict__)
    return module.__dict__


def test_the_documented_workflow_runs_and_counts_every_row(engine, loaded, oracle):
    example = _example_module()
    try:
        params = example["CountRowsParams"].build(engine, loaded)
        assert params.lock_table is None and sorted(params.tables) == ["cells", "synapses"]
        run = wait_for(engine, submit_params(engine, params), timeout=120)
        assert run.state == "SUCCESS", run.errors
        expected = sum(len(oracle.base_rows(t)["id"]) for t in ("synapses", "cells"))
        assert run.result["count_rows"] == {"tables": 2, "rows": expected}
        assert [s["key"] for s in run.steps] == ["count"] and run.chunks_done == 2
    finally:
        wf.WORKFLOWS.pop("count_rows", None)
        wp.PARAMETERS.pop("count_rows", None)
        sys.modules.pop("count_rows_example", None)
