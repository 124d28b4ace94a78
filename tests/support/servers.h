/* servers.h - real test servers (Redis, FerretDB, mongo-java-server) on free
 * loopback ports.
 *
 * Integration tests start the servers they need with these helpers, talk to
 * them over real sockets, and stop them by PID. A server that cannot start
 * is a test failure: the start functions return -1 with a message on
 * stderr, and callers fail the test.
 */
#ifndef SYNCD_TEST_SERVERS_H
#define SYNCD_TEST_SERVERS_H

#include <sys/types.h>

/* One server process started by a test. */
typedef struct syncd_test_server {
    pid_t pid;     /* 0 when not running */
    int port;      /* loopback port it listens on */
    char dir[256]; /* private temp dir (data, logs); removed on stop */
    char kind[16]; /* "redis", "ferretdb" or "mongo-java" */
    char uri[320]; /* "redis://127.0.0.1:P" or "mongodb://127.0.0.1:P/" */
    int external;  /* 1 when SYNCD_TEST_MONGO_URI names an outside server */
} syncd_test_server_t;

/* In a child forked by a test (parent: the test's pid, taken before the
 * fork), before its exec: ties its life to the test (killed when the test
 * dies, an assertion's failure included, so that no daemon outlives it and
 * holds the test's output open) and sends its stdout and stderr to log,
 * appended or truncated. */
void syncd_test_child_setup(pid_t parent, const char *log, int append);

/* Returns a TCP port that is free on 127.0.0.1 right now, or -1. */
int syncd_test_free_port(void);

/* Connects a TCP socket to 127.0.0.1:port; returns it (the caller closes
 * it), or -1 when the connection fails. */
int syncd_test_connect(int port);

/* Makes a fresh temp dir "/tmp/syncd-test-<tag>-XXXXXX" into buf (size
 * bytes); returns 0 or -1. */
int syncd_test_tmpdir(char *buf, size_t size, const char *tag);

/* Removes dir and everything under it; returns 0 or -1. */
int syncd_test_rmtree(const char *dir);

/* Starts redis-server without persistence on a free port and waits until it
 * answers; returns 0, or -1 (message on stderr). */
int syncd_test_redis_start(syncd_test_server_t *srv);

/* Starts the MongoDB-wire server of the test run on a free port and waits
 * until it accepts connections: FerretDB (SQLite backend, binary from
 * $SYNCD_FERRETDB or the project's .tools/bin), or mongo-java-server when
 * $SYNCD_TEST_MONGO_SERVER is "mongo-java-server"; with
 * $SYNCD_TEST_MONGO_URI set, uses that server instead (external = 1,
 * nothing is started). Returns 0 or -1. */
int syncd_test_mongo_start(syncd_test_server_t *srv);

/* Starts mongo-java-server (memory backend: a restart starts it empty;
 * launcher from $SYNCD_MONGO_JAVA or the project's
 * .tools/bin/mongo-java-server) on a free port and waits until it accepts
 * connections; returns 0 or -1 (message on stderr). */
int syncd_test_mongo_java_start(syncd_test_server_t *srv);

/* Stops the server with SIGTERM (SIGKILL after 5 s) and waits for it,
 * keeping its dir so that it can be restarted; returns 0 or -1. */
int syncd_test_server_stop(syncd_test_server_t *srv);

/* Starts a stopped server again on the same port with the same data dir;
 * returns 0 or -1. */
int syncd_test_server_restart(syncd_test_server_t *srv);

/* Stops the server if running and removes its dir. */
void syncd_test_server_destroy(syncd_test_server_t *srv);

/* Runs `redis-cli -p PORT args...` (NULL-terminated) and returns its exit
 * status, or -1. */
int syncd_test_redis_cli(const syncd_test_server_t *srv, ...);

/* Returns the number of fields of the hash key in the Redis srv, or -1. */
long long syncd_test_redis_hlen(const syncd_test_server_t *srv,
                                const char *key);

#endif
