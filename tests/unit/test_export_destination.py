"""Export destinations: what passes ``_check_destination`` and how the rest is refused."""

from __future__ import annotations

import pytest

from matengine.errors import InvalidInput
from matengine.export.destination import Destination, _check_destination


@pytest.mark.parametrize(
    "url",
    ["file:///data/exports/v3", "gs://bucket/a/b", "s3://bucket", "s3://b/x/"],
)
def test_accepted_destinations(url, admit_sources):
    admit_sources("file:///data", "gs://bucket", "s3://bucket", "s3://b")
    assert _check_destination(url) == url


def test_a_destination_outside_the_source_roots_is_refused(admit_sources):
    admit_sources("gs://bucket/exports")
    with pytest.raises(InvalidInput, match="is outside the configured source roots"):
        _check_destination("gs://bucket/elsewhere/v3")
    assert _check_destination("gs://bucket/exports/v3") == "gs://bucket/exports/v3"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("", "destination must be a URL of at most 1024 characters"),
        ("s3://b/" + "x" * 1100, "destination must be a URL of at most 1024 characters"),
        ("file:///a/\nb", "destination contains control characters"),
        ("/data/x", "destination must start with file://, gs:// or s3://"),
        ("https://host/x", "destination must start with file://, gs:// or s3://"),
        ("file:///a/../etc", "destination must not contain '..' segments or backslashes"),
        ("gs://bucket/..", "destination must not contain '..' segments or backslashes"),
        ("file:///a\\b", "destination must not contain '..' segments or backslashes"),
        ("s3://bucket/x#frag", "destination must not have a query or fragment"),
        ("file://otherhost/x", "file:// destinations must be an absolute folder, not /"),
        ("file://localhost/x", "file:// destinations must be an absolute folder, not /"),
        ("file:///", "file:// destinations must be an absolute folder, not /"),
        ("gs:///nobucket", "bucket destinations must be <scheme>://bucket/prefix"),
        ("s3://host:9000/b", "bucket destinations must be <scheme>://bucket/prefix"),
    ],
)
def test_refused_destinations_name_the_rule_not_the_url(url, rule):
    with pytest.raises(InvalidInput) as err:
        _check_destination(url)
    assert str(err.value) == f"field 'to': {rule}"


def test_paths_inside_a_destination(admit_sources):
    admit_sources("gs://bucket", "file:///data")
    d = Destination.parse("gs://bucket/exports/v3/")
    assert (d.url, d.root) == ("gs://bucket/exports/v3", "bucket/exports/v3")
    assert d.path("synapses", "part-00000.parquet") == "bucket/exports/v3/synapses/part-00000.parquet"
    assert Destination.parse("file:///data/x").root == "/data/x"
