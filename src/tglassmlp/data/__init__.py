"""On-disk data: shard format (HDF5, one file per temperature and structure) and the GlassBench import.

See ``docs/data-format.md`` for the layout; the tables there come from :data:`FIELDS` and :data:`ATTRIBUTES`.
"""

from tglassmlp.data.glassbench import (
    GLASSBENCH_TIMES,
    GlassBenchError,
    GlassBenchStructure,
    parse_glassbench_name,
    read_glassbench,
)
from tglassmlp.data.shards import (
    ATTRIBUTES,
    DIMENSIONS,
    FIELDS,
    FORMAT_VERSION,
    REQUIRED_ATTRIBUTES,
    REQUIRED_FIELDS,
    AttrSpec,
    FieldSpec,
    Shard,
    ShardError,
    ShardReader,
    config_hash,
    format_table_markdown,
    is_complete,
    open_shard,
    package_versions,
    parse_shard_path,
    read_shard,
    resolved_yaml,
    shard_path,
    update_shard,
    write_shard,
)

__all__ = [
    "ATTRIBUTES", "DIMENSIONS", "FIELDS", "FORMAT_VERSION", "REQUIRED_ATTRIBUTES", "REQUIRED_FIELDS",
    "AttrSpec", "FieldSpec", "GLASSBENCH_TIMES", "GlassBenchError", "GlassBenchStructure", "Shard",
    "ShardError", "ShardReader", "config_hash", "format_table_markdown", "is_complete", "open_shard",
    "package_versions", "parse_glassbench_name", "parse_shard_path", "read_glassbench", "read_shard",
    "resolved_yaml", "shard_path", "update_shard", "write_shard",
]
