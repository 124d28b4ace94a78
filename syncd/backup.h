/* backup.h - `syncd backup`: an offline checkpoint of a node's embedded
 * store (internal to syncd/).
 */
#ifndef SYNCD_BACKUP_H
#define SYNCD_BACKUP_H

/* Runs `syncd backup --data-dir D --out DIR` (argv[0] is "backup"):
 * writes DIR/store, a RocksDB checkpoint of D/store, which a node started
 * with --data-dir DIR serves. Returns the process exit status: 0, 1 when
 * it fails (one line on stderr says why; a running node holding D is
 * named with the command that asks it instead), 2 for usage errors. */
int syncd_backup_main(int argc, char **argv);

#endif
