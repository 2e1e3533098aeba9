"""Reading published dataset versions in training scripts: `lakecurate.dataset`.

    import lakecurate.dataset as lcd
    ds = lcd.webdataset("lake/_published/demo/v3").decode("pil")   # a WebDataset pipeline
    ds = lcd.ShardDataset("lake/_published/demo/v3")                # a torch IterableDataset

Both apply the version's deletion lists (`readers`). No Spark and no lake access.
"""

from lakecurate.dataset.readers import (
    ShardDataset,
    SkipDeleted,
    Version,
    open_version,
    read_shard,
    webdataset,
)

__all__ = ["ShardDataset", "SkipDeleted", "Version", "open_version", "read_shard", "webdataset"]
