"""The ground every stage stands on: the stage contract, the shard executor, file formats, config schemas, tracking,
FLOPs and paths (standard library + pyarrow)."""
