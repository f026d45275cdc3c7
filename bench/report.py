"""Run every benchmark on one synthetic dataset and print one table of ratios (docs/design.md §8).

Columns: operation, ours, baseline, unit, ratio (ours / baseline for rates; as the target
says for times), target, met?. ``--json PATH`` writes the table plus every benchmark's
details (step profiles, component times) as JSON.

Usage: ``python -m bench.report --rows 1M [--only upload sync] [--json out.json]`` from the
repository root, or ``matengine bench``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from bench import dataset, human, parse_rows

BENCHMARKS = ("upload", "sync", "materialize", "query", "export", "aggregates", "versions", "writeback")
MODULES = {
    "upload": "bench.bench_upload",
    "sync": "bench.bench_sync",
    "materialize": "bench.bench_materialize",
    "query": "bench.bench_query",
    "export": "bench.bench_export",
    "aggregates": "bench.bench_aggregates",
    "versions": "bench.bench_versions",
    "writeback": "bench.bench_writeback",
}
COLUMNS = ("operation", "ours", "baseline", "unit", "ratio", "target", "met?")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    cells = [
        [
            _fmt(r.get("operation")),
            _fmt(r.get("ours")),
            _fmt(r.get("baseline")),
            _fmt(r.get("unit")),
            "-" if r.get("ratio") is None else f"{_fmt(r['ratio'])}x",
            r.get("target") or "-",
            _fmt(r.get("met")),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(COLUMNS)]
    right = {1, 2, 4}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def print_table(rows: Sequence[dict[str, Any]], file: TextIO | None = None) -> None:
    print(format_table(rows), file=file or sys.stdout)


def _adapt(name: str, result: Any) -> list[dict[str, Any]]:
    """Rows of a benchmark result: ours already in table form; any other dict is shown as
    one informational line per numeric entry (for benchmarks with their own format)."""
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        return result["rows"]
    if isinstance(result, dict):
        return [
            {
                "operation": f"{name}: {k}",
                "ours": v,
                "baseline": None,
                "unit": "",
                "ratio": None,
                "target": "",
                "met": None,
                "note": "",
            }
            for k, v in result.items()
            if isinstance(v, (int, float))
        ]
    return []


def _available(name: str) -> bool:
    return (Path(__file__).parent / f"{MODULES[name].split('.')[-1]}.py").exists()


def run_all(
    rows: int | str = "1M",
    only: Sequence[str] | None = None,
    *,
    json_out: str | Path | None = None,
    workdir: str | Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the selected benchmarks (all available by default) and return the report."""
    n = parse_rows(rows)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    names = list(only) if only else [b for b in BENCHMARKS if _available(b)]
    unknown = [b for b in names if b not in MODULES]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    report: dict[str, Any] = {
        "rows": n,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpus(),
            "load_average_at_start": _load(),
        },
        "table": [],
        "benchmarks": {},
        "errors": {},
    }
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="matengine_bench_") as tmp:
        info = None
        if any(b in ("upload", "sync", "materialize", "versions") for b in names):
            log(f"generating a synthetic dataset of {human(n)} synapses …")
            t = time.perf_counter()
            info = dataset(Path(tmp) / "ds", n, seed=seed)
            report["dataset_seconds"] = round(time.perf_counter() - t, 2)
        for name in names:
            log(f"running {name} …")
            t = time.perf_counter()
            try:
                module = importlib.import_module(MODULES[name])
                kwargs = dict((options or {}).get(name, {}))
                if name in ("query", "aggregates", "writeback"):
                    result = module.run(n, **kwargs)
                else:
                    result = module.run(n, workdir=tmp, info=info, **kwargs)
            except Exception as exc:  # one failing benchmark must not hide the others
                report["errors"][name] = f"{type(exc).__name__}: {exc}"
                report["benchmarks"][name] = {"traceback": traceback.format_exc()}
                log(f"{name} failed: {exc}")
                continue
            seconds = round(time.perf_counter() - t, 1)
            log(f"{name} done in {seconds} s")
            report["benchmarks"][name] = result
            report["table"] += _adapt(name, result)
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    report["machine"]["load_average_at_end"] = _load()
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2, default=str))
    return report


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews timings."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1M")
    p.add_argument("--only", nargs="*", choices=BENCHMARKS)
    p.add_argument("--json", dest="json_out")
    args = p.parse_args(argv)
    report = run_all(args.rows, args.only, json_out=args.json_out)
    print_table(report["table"])
    for name, err in report["errors"].items():
        print(f"{name} FAILED: {err}", file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())


def show(result: dict[str, Any], *, as_json: bool) -> None:
    """What a benchmark module prints when run alone: its JSON, or its rows as the table."""
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result["rows"])
