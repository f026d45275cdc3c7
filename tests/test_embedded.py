"""Smoke test of the embedded default: no database URL, the demo runs on a PostgreSQL the
package starts itself (Unix socket in MATENGINE_HOME, never the system server's port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from matengine.db.server_tuning import this_machine, tuned_settings


def _pretty_size(mb: str) -> str:
    """PostgreSQL shows a size in the largest unit that divides it (6144MB as 6GB)."""
    n = int(mb.removesuffix("MB"))
    return f"{n // 1024}GB" if n % 1024 == 0 else mb


def _matengine(home, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATENGINE_")}
    env["MATENGINE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "matengine", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_runs_on_embedded_postgres(tmp_path):
    home = tmp_path / "home"
    try:
        result = _matengine(home, "demo", "--json")
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["database"] == "embedded" and summary["workers"] == "in-process"
        assert summary["verified"] is True, summary["problems"]
        assert summary["versions"] == [1, 2]
        assert summary["rows"]["v1.synapses"] == 5000 and summary["live_query_rows"] > 0
        status = json.loads(_matengine(home, "db", "status", "--json").stdout)
        assert status["mode"] == "embedded" and status["running"] is True
        # a socket inside MATENGINE_HOME, not the system server on 127.0.0.1:5432
        assert f"host={home.resolve()}" in status["url"]
        assert "127.0.0.1" not in status["url"] and "localhost" not in status["url"]
        # sized to this machine at the first start (restarted once for shared buffers)
        want = tuned_settings(this_machine(home))
        assert status["settings"]["shared_buffers"] == _pretty_size(want["shared_buffers"])
        assert status["settings"]["max_wal_size"] == want["max_wal_size"]
        assert status["settings"]["checkpoint_timeout"] == want["checkpoint_timeout"]
    finally:
        stopped = json.loads(_matengine(home, "db", "stop", "--json").stdout)
    assert stopped["stopped"] is True
    assert json.loads(_matengine(home, "db", "status", "--json").stdout)["running"] is False
