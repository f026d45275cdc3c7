"""The embedded server's settings, sized to the machine (matengine/db/server_tuning.py)."""

from __future__ import annotations

from matengine.db.server_tuning import (
    GIB,
    INCLUDE_LINE,
    MIB,
    Machine,
    render_conf,
    tuned_settings,
    with_include,
)


def test_shared_buffers_are_a_quarter_of_the_ram_between_128mb_and_8gb():
    assert tuned_settings(Machine(24 * GIB, 2))["shared_buffers"] == "6144MB"
    assert tuned_settings(Machine(256 * GIB, 64))["shared_buffers"] == "8192MB"
    assert tuned_settings(Machine(256 * MIB, 1))["shared_buffers"] == "128MB"


def test_small_machines_keep_the_stock_wal_size():
    assert tuned_settings(Machine(2 * GIB, 1, 500 * GIB))["max_wal_size"] == "1GB"
    assert tuned_settings(Machine(24 * GIB, 2))["max_wal_size"] == "4GB"


def test_wal_between_checkpoints_grows_with_the_free_disk_in_coarse_steps():
    assert tuned_settings(Machine(24 * GIB, 2, 20 * GIB))["max_wal_size"] == "4GB"
    assert tuned_settings(Machine(24 * GIB, 2, 40 * GIB))["max_wal_size"] == "8GB"
    assert tuned_settings(Machine(24 * GIB, 2, 71 * GIB))["max_wal_size"] == "16GB"
    assert tuned_settings(Machine(24 * GIB, 2, 4000 * GIB))["max_wal_size"] == "16GB"


def test_the_free_disk_is_read_where_the_data_directory_will_be(tmp_path):
    from matengine.db.server_tuning import this_machine

    assert this_machine(tmp_path / "not" / "yet" / "pgdata").disk_free_bytes > 0
    assert this_machine().disk_free_bytes == 0


def test_two_parallel_index_builds_share_the_cores_up_to_four_workers_each():
    assert tuned_settings(Machine(24 * GIB, 2))["max_parallel_maintenance_workers"] == "0"
    assert tuned_settings(Machine(24 * GIB, 1))["max_parallel_maintenance_workers"] == "0"
    assert tuned_settings(Machine(24 * GIB, 8))["max_parallel_maintenance_workers"] == "3"
    assert tuned_settings(Machine(24 * GIB, 32))["max_parallel_maintenance_workers"] == "4"


def test_the_conf_file_quotes_every_value():
    text = render_conf({"shared_buffers": "128MB", "checkpoint_timeout": "15min"})
    assert text.splitlines()[1:] == ["checkpoint_timeout = '15min'", "shared_buffers = '128MB'"]


def test_the_include_line_is_added_once_at_the_end():
    once = with_include("port = 5432")
    assert once == f"port = 5432\n{INCLUDE_LINE}\n"
    assert with_include(once) == once


def test_full_page_images_are_not_compressed():
    # the embedded build offers only pglz, which made random updates 4-5x slower
    assert "wal_compression" not in tuned_settings(Machine(24 * GIB, 2))
