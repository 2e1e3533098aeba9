"""Publishing: which samples go in which shard (`layout`) and the shard and manifest
files themselves (`files`)."""
