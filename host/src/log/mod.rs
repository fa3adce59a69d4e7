//! The embedded partitioned log (the rapids): topics, partitions, segments, indexes, recovery, retention, compaction.
