/* rocks_options.h - the options of every RocksDB database syncd opens (the
 * embedded store, the node cache and the embedded bus's replay log).
 *
 * Part of base/, in a library of its own (syncd_rocks_options), since it
 * is the one piece of base/ that links RocksDB.
 */
#ifndef SYNCD_BASE_ROCKS_OPTIONS_H
#define SYNCD_BASE_ROCKS_OPTIONS_H

#include <stdint.h>

#include <rocksdb/c.h>

/* Bytes of one RocksDB memtable (at most two are kept). RocksDB's default,
 * 64 MiB, lets a node's memory grow by that much per database before the
 * first flush: with the cache's WAL off nothing else bounds it. */
#define SYNCD_ROCKS_WRITE_BUFFER ((size_t)4 << 20)

/* Returns new options (caller destroys with rocksdb_options_destroy()):
 * the database created when missing, two memtables of
 * SYNCD_ROCKS_WRITE_BUFFER, and an LRU block cache of its own of
 * block_cache_bytes (0: no block cache). */
rocksdb_options_t *syncd_rocks_options(uint64_t block_cache_bytes);

#endif
