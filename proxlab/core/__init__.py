"""The ground every stage stands on: stage contract, shard executor, file formats, config schemas, tracking, FLOPs, paths (standard library + pyarrow)."""
