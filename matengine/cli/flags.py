"""Errors as a CLI user reads them: the workflows name their parameters (``roots_timestamp``,
as the REST API's JSON fields do), the command line calls them ``--roots-timestamp``."""

from __future__ import annotations

import re

# run parameter -> the flag of the commands that set it
FLAGS = {
    "roots_timestamp": "--roots-timestamp",
    "column_mapping": "--column-mapping",
    "chunk_rows": "--chunk-rows",
    "days_to_expire": "--days-to-expire",
    "reference_table": "--reference-table",
    "voxel_resolution": "--voxel-resolution",
    "segmentation_source": "--segmentation-source",
    "created": "--created",
    "timestamp": "--timestamp",
}
# names that are also plain words ("created", "timestamp") are replaced only where they stand
# for the parameter: as a field, in parentheses, or opening the message
_WORDS = {"created", "timestamp"}


def as_cli_message(message: str) -> str:
    for name, flag in FLAGS.items():
        message = message.replace(f"field {name!r}", f"option {flag}")
        message = message.replace(f"({name})", f"({flag})")
        if message.startswith(f"{name} "):
            message = flag + message[len(name) :]
        if name not in _WORDS:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flag, message)
    return message
