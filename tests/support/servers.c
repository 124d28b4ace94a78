/* servers.c - start, stop and restart real Redis, FerretDB and
 * mongo-java-server servers for the integration tests, each on a free
 * loopback port with its own temp dir.
 */
#define _GNU_SOURCE
#include "servers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#ifndef SYNCD_SOURCE_DIR
#define SYNCD_SOURCE_DIR "."
#endif

int syncd_test_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

int syncd_test_tmpdir(char *buf, size_t size, const char *tag)
{
    if ((size_t)snprintf(buf, size, "/tmp/syncd-test-%s-XXXXXX", tag) >= size)
        return -1;
    return mkdtemp(buf) != NULL ? 0 : -1;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int syncd_test_rmtree(const char *dir)
{
    return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int syncd_test_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int port_answers(int port)
{
    int fd = syncd_test_connect(port);

    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

void syncd_test_child_setup(pid_t parent, const char *log, int append)
{
    int fd;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    fd = open(log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
}

/* Forks and execs argv with stdout/stderr to logfile; returns the pid. */
static pid_t spawn(char *const argv[], const char *logfile)
{
    pid_t parent = getpid(), pid = fork();

    if (pid != 0)
        return pid;
    syncd_test_child_setup(parent, logfile, 1);
    setpgid(0, 0);
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* Waits up to 30 s for srv to accept connections while it stays alive. */
static int wait_ready(syncd_test_server_t *srv, const char *logfile)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    int status;

    for (int i = 0; i < 1500; i++) {
        if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
            fprintf(stderr, "%s exited during start; see %s\n", srv->kind,
                    logfile);
            srv->pid = 0;
            return -1;
        }
        if (port_answers(srv->port))
            return 0;
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "%s did not answer on port %d within 30 s; see %s\n",
            srv->kind, srv->port, logfile);
    kill(srv->pid, SIGKILL);
    waitpid(srv->pid, &status, 0);
    srv->pid = 0;
    return -1;
}

#define MONGO_JAVA_KIND "mongo-java"

/* Spawns mongo-java-server on srv->port and waits until it answers. */
static int launch_mongo_java(syncd_test_server_t *srv)
{
    const char *bin = getenv("SYNCD_MONGO_JAVA");
    char def[300], log[300], port[16];

    if (bin == NULL || *bin == '\0') {
        snprintf(def, sizeof(def), "%s/.tools/bin/mongo-java-server",
                 SYNCD_SOURCE_DIR);
        bin = def;
    }
    if (access(bin, X_OK) != 0) {
        fprintf(stderr,
                "mongo-java-server not found at %s: run scripts/setup.sh "
                "or set SYNCD_MONGO_JAVA\n",
                bin);
        return -1;
    }
    snprintf(log, sizeof(log), "%s/server.log", srv->dir);
    snprintf(port, sizeof(port), "%d", srv->port);
    char *argv[] = {(char *)bin, port, NULL};
    srv->pid = spawn(argv, log);
    if (srv->pid < 0) {
        srv->pid = 0;
        return -1;
    }
    return wait_ready(srv, log);
}

static int launch(syncd_test_server_t *srv)
{
    char log[300], port[16], url[300], state[300], listen[64];

    if (strcmp(srv->kind, MONGO_JAVA_KIND) == 0)
        return launch_mongo_java(srv);
    snprintf(log, sizeof(log), "%s/server.log", srv->dir);
    snprintf(port, sizeof(port), "%d", srv->port);
    if (strcmp(srv->kind, "redis") == 0) {
        char *argv[] = {"redis-server", "--port", port,     "--bind",
                        "127.0.0.1",    "--save", "",       "--appendonly",
                        "no",           "--dir",  srv->dir, NULL};
        srv->pid = spawn(argv, log);
    } else {
        const char *bin = getenv("SYNCD_FERRETDB");
        char def[300];

        if (bin == NULL || *bin == '\0') {
            snprintf(def, sizeof(def), "%s/.tools/bin/ferretdb",
                     SYNCD_SOURCE_DIR);
            bin = def;
        }
        if (access(bin, X_OK) != 0) {
            fprintf(stderr,
                    "FerretDB not found at %s: run scripts/setup.sh "
                    "or set SYNCD_FERRETDB\n",
                    bin);
            return -1;
        }
        snprintf(url, sizeof(url), "--sqlite-url=file:%s/data/", srv->dir);
        snprintf(state, sizeof(state), "--state-dir=%s", srv->dir);
        snprintf(listen, sizeof(listen), "--listen-addr=127.0.0.1:%d",
                 srv->port);
        snprintf(log, sizeof(log), "%s/server.log", srv->dir);
        char data[300];
        snprintf(data, sizeof(data), "%s/data", srv->dir);
        mkdir(data, 0755);
        char *argv[] = {(char *)bin,
                        "--handler=sqlite",
                        url,
                        listen,
                        state,
                        "--telemetry=disable",
                        "--log-level=warn",
                        "--debug-addr=-",
                        NULL};
        srv->pid = spawn(argv, log);
    }
    if (srv->pid < 0) {
        srv->pid = 0;
        return -1;
    }
    return wait_ready(srv, log);
}

static int start(syncd_test_server_t *srv, const char *kind)
{
    memset(srv, 0, sizeof(*srv));
    snprintf(srv->kind, sizeof(srv->kind), "%s", kind);
    if (syncd_test_tmpdir(srv->dir, sizeof(srv->dir), kind) != 0) {
        fprintf(stderr, "cannot make a temp dir for %s\n", kind);
        return -1;
    }
    for (int tries = 0; tries < 5; tries++) {
        srv->port = syncd_test_free_port();
        if (srv->port < 0)
            continue;
        if (strcmp(kind, "redis") == 0)
            snprintf(srv->uri, sizeof(srv->uri), "redis://127.0.0.1:%d",
                     srv->port);
        else
            snprintf(srv->uri, sizeof(srv->uri), "mongodb://127.0.0.1:%d/",
                     srv->port);
        if (launch(srv) == 0)
            return 0;
    }
    return -1;
}

int syncd_test_redis_start(syncd_test_server_t *srv)
{
    return start(srv, "redis");
}

/* Whether $SYNCD_TEST_MONGO_SERVER picks mongo-java-server over FerretDB
 * (tests/CMakeLists.txt registers the MongoDB tests once per server). */
static int mongo_java_selected(void)
{
    const char *which = getenv("SYNCD_TEST_MONGO_SERVER");

    return which != NULL && strcmp(which, "mongo-java-server") == 0;
}

int syncd_test_mongo_start(syncd_test_server_t *srv)
{
    const char *ext = getenv("SYNCD_TEST_MONGO_URI");

    if (ext != NULL && *ext != '\0') {
        memset(srv, 0, sizeof(*srv));
        snprintf(srv->kind, sizeof(srv->kind), "mongodb");
        snprintf(srv->uri, sizeof(srv->uri), "%s", ext);
        srv->external = 1;
        return 0;
    }
    if (mongo_java_selected())
        return syncd_test_mongo_java_start(srv);
    return start(srv, "ferretdb");
}

int syncd_test_mongo_java_start(syncd_test_server_t *srv)
{
    return start(srv, MONGO_JAVA_KIND);
}

int syncd_test_server_stop(syncd_test_server_t *srv)
{
    int status;

    if (srv->pid <= 0)
        return srv->external ? -1 : 0;
    kill(srv->pid, SIGTERM);
    for (int i = 0; i < 250; i++) {
        if (waitpid(srv->pid, &status, WNOHANG) == srv->pid) {
            srv->pid = 0;
            return 0;
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(srv->pid, SIGKILL);
    waitpid(srv->pid, &status, 0);
    srv->pid = 0;
    return 0;
}

int syncd_test_server_restart(syncd_test_server_t *srv)
{
    if (srv->external)
        return -1;
    if (srv->pid > 0)
        syncd_test_server_stop(srv);
    /* The port may linger in TIME_WAIT for clients; servers set
     * SO_REUSEADDR, so binding again succeeds. */
    return launch(srv);
}

void syncd_test_server_destroy(syncd_test_server_t *srv)
{
    if (srv->external)
        return;
    syncd_test_server_stop(srv);
    if (srv->dir[0] != '\0')
        syncd_test_rmtree(srv->dir);
    srv->dir[0] = '\0';
}

int syncd_test_redis_cli(const syncd_test_server_t *srv, ...)
{
    char *argv[32];
    char port[16];
    int n = 0, status;
    va_list ap;
    pid_t pid;

    snprintf(port, sizeof(port), "%d", srv->port);
    argv[n++] = "redis-cli";
    argv[n++] = "-p";
    argv[n++] = port;
    va_start(ap, srv);
    for (char *a; n < 31 && (a = va_arg(ap, char *)) != NULL;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

long long syncd_test_redis_hlen(const syncd_test_server_t *srv, const char *key)
{
    redisContext *c = redisConnect("127.0.0.1", srv->port);
    redisReply *reply = NULL;
    long long n = -1;

    if (c != NULL && c->err == 0)
        reply = redisCommand(c, "HLEN %s", key);
    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
        n = reply->integer;
    if (reply != NULL)
        freeReplyObject(reply);
    redisFree(c);
    return n;
}
