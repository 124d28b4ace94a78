/* rocks_options.c - the options of every RocksDB database syncd opens. */
#include "base/rocks_options.h"

rocksdb_options_t *syncd_rocks_options(uint64_t block_cache_bytes)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_block_based_table_options_t *t =
        rocksdb_block_based_options_create();

    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_write_buffer_size(o, SYNCD_ROCKS_WRITE_BUFFER);
    rocksdb_options_set_max_write_buffer_number(o, 2);
    if (block_cache_bytes == 0) {
        rocksdb_block_based_options_set_no_block_cache(t, 1);
    } else {
        rocksdb_cache_t *cache = rocksdb_cache_create_lru(block_cache_bytes);

        rocksdb_block_based_options_set_block_cache(t, cache);
        rocksdb_cache_destroy(cache); /* the table factory shares it */
    }
    rocksdb_options_set_block_based_table_factory(o, t);
    rocksdb_block_based_options_destroy(t);
    return o;
}
