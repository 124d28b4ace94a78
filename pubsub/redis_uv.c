/* redis_uv.c - drives a hiredis async context from a libuv loop.
 *
 * hiredis knows no event loop: an async context asks for read and write
 * readiness through five hooks (addRead, delRead, addWrite, delWrite,
 * cleanup) that an adapter fills in, and the adapter calls
 * redisAsyncHandleRead() or redisAsyncHandleWrite() when the socket is
 * ready. This adapter keeps one uv_poll_t per context.
 *
 * It exists because the libuv adapter header of hiredis 0.14 (Debian 12)
 * drops poll errors. libuv reports a refused or failed connect, and a
 * reset connection, as a poll error (and stops the poll); dropping it
 * means hiredis never looks at the socket again, so neither its connect
 * nor its disconnect callback fires and the bus never reconnects. Here a
 * poll error is handed to hiredis as read readiness: hiredis then finds
 * the socket's error itself, fails the context and runs its callbacks.
 * The connect itself is watched from the start (write readiness), so a
 * context with no command queued still learns that it connected or not.
 *
 * Two things keep a command from costing system calls of its own. The
 * poll is started only when the events watched change: libuv's
 * uv_poll_start() removes the socket from epoll and adds it back, and
 * hiredis asks for reads again after every read and every write. And once
 * connected, a command is not written on write readiness, which would take
 * one more turn of the loop through epoll, but from an idle handle that
 * runs before the loop polls again: every command queued in a turn goes
 * out in one send() of hiredis's output buffer (MSG_NOSIGNAL: a connection
 * Redis closed fails the send instead of raising SIGPIPE in a process that
 * does not ignore it), and the socket is watched for write readiness only
 * while the kernel takes less than all of it.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include <hiredis/async.h>
#include <hiredis/sds.h>

#include "pubsub/internal.h"

/* The adapter state of one context; freed when both handles closed. */
typedef struct redis_uv {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    uv_idle_t flush; /* writes queued commands before the next poll */
    int events;      /* UV_READABLE | UV_WRITABLE that hiredis asked for */
    int armed;       /* the events the poll was started with */
    int stalled;     /* the kernel took less than all: write on readiness */
    int open;        /* handles not yet closed */
} redis_uv_t;

static void on_poll(uv_poll_t *poll, int status, int events);
static void on_flush(uv_idle_t *idle);

/* Watches p's socket for what hiredis asked for, write readiness only
 * while the context connects or the kernel's buffer is full (else the idle
 * handle flushes the writes); starts or stops the poll only when that
 * changes. */
static void watch(redis_uv_t *p)
{
    int want = p->events;

    if ((want & UV_WRITABLE) && !p->stalled && p->ac != NULL &&
        (p->ac->c.flags & REDIS_CONNECTED)) {
        want &= ~UV_WRITABLE;
        uv_idle_start(&p->flush, on_flush);
    }
    if (want == p->armed)
        return;
    p->armed = want;
    if (want != 0)
        uv_poll_start(&p->poll, want, on_poll);
    else
        uv_poll_stop(&p->poll);
}

/* Sends what hiredis has queued on p's connected context, as hiredis's
 * own write would (its output buffer keeps what the kernel did not take;
 * the socket is then watched for write readiness). A failed send leaves
 * the buffer: hiredis's read of the socket finds why and fails the
 * context. */
static void send_out(redis_uv_t *p)
{
    redisContext *c = &p->ac->c;
    size_t len = sdslen(c->obuf);
    ssize_t n = len > 0 ? send(c->fd, c->obuf, len, MSG_NOSIGNAL) : 0;

    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        p->stalled = 1;
        redisAsyncHandleRead(p->ac);
        if (p->ac == NULL)
            return;
    } else if (n > 0 && (size_t)n == len) {
        sdsclear(c->obuf);
    } else if (n > 0) {
        sdsrange(c->obuf, (int)n, -1);
    }
    p->stalled = sdslen(c->obuf) > 0;
    if (!p->stalled)
        p->events &= ~UV_WRITABLE;
    /* hiredis reads after every write. */
    p->events |= UV_READABLE;
    watch(p);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    redis_uv_t *p = poll->data;

    if (status < 0) {
        /* libuv stopped the poll. hiredis reads the socket error (or
         * finishes the connect) and fails the context; should the socket
         * turn out fine, watching resumes. */
        p->armed = 0;
        if (p->ac != NULL)
            redisAsyncHandleRead(p->ac);
        if (p->ac != NULL)
            watch(p);
        return;
    }
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac == NULL || !(events & UV_WRITABLE))
        return;
    /* hiredis completes the connect (and writes what was queued). */
    if (p->ac->c.flags & REDIS_CONNECTED)
        send_out(p);
    else
        redisAsyncHandleWrite(p->ac);
}

/* Sends the commands queued in this turn of the loop, before it polls. */
static void on_flush(uv_idle_t *idle)
{
    redis_uv_t *p = idle->data;

    uv_idle_stop(idle);
    if (p->ac != NULL && (p->events & UV_WRITABLE))
        send_out(p);
}

static void add_read(void *privdata)
{
    redis_uv_t *p = privdata;

    p->events |= UV_READABLE;
    watch(p);
}

static void del_read(void *privdata)
{
    redis_uv_t *p = privdata;

    p->events &= ~UV_READABLE;
    watch(p);
}

static void add_write(void *privdata)
{
    redis_uv_t *p = privdata;

    p->events |= UV_WRITABLE;
    watch(p);
}

static void del_write(void *privdata)
{
    redis_uv_t *p = privdata;

    p->events &= ~UV_WRITABLE;
    p->stalled = 0;
    watch(p);
}

static void on_closed(uv_handle_t *handle)
{
    redis_uv_t *p = handle->data;

    if (--p->open == 0)
        free(p);
}

/* hiredis is freeing the context: it must not be touched again. */
static void cleanup(void *privdata)
{
    redis_uv_t *p = privdata;

    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, on_closed);
    uv_close((uv_handle_t *)&p->flush, on_closed);
}

int syncd_bus_redis_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    redis_uv_t *p;

    if (ac->ev.data != NULL)
        return SYNCD_EINVAL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return SYNCD_ENOMEM;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return SYNCD_EBACKEND;
    }
    uv_idle_init(loop, &p->flush);
    p->open = 2;
    p->ac = ac;
    p->poll.data = p;
    p->flush.data = p;
    ac->ev.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    /* The non-blocking connect ends when the socket turns writable. */
    add_write(p);
    return 0;
}
