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
 */
#include <stdlib.h>

#include <hiredis/async.h>

#include "pubsub/internal.h"

/* The adapter state of one context; freed when its poll handle closed. */
typedef struct redis_uv {
    redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
    uv_poll_t poll;
    int events; /* UV_READABLE | UV_WRITABLE that hiredis asked for */
} redis_uv_t;

static void on_poll(uv_poll_t *poll, int status, int events)
{
    redis_uv_t *p = poll->data;

    if (status < 0) {
        /* libuv stopped the poll. hiredis reads the socket error (or
         * finishes the connect) and fails the context; should the socket
         * turn out fine, watching resumes. */
        if (p->ac != NULL)
            redisAsyncHandleRead(p->ac);
        if (p->ac != NULL && p->events != 0)
            uv_poll_start(&p->poll, p->events, on_poll);
        return;
    }
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

/* Watches p's socket for the events hiredis asked for. */
static void watch(redis_uv_t *p)
{
    if (p->events != 0)
        uv_poll_start(&p->poll, p->events, on_poll);
    else
        uv_poll_stop(&p->poll);
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
    watch(p);
}

static void on_poll_closed(uv_handle_t *handle)
{
    free(handle->data);
}

/* hiredis is freeing the context: it must not be touched again. */
static void cleanup(void *privdata)
{
    redis_uv_t *p = privdata;

    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, on_poll_closed);
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
    p->ac = ac;
    p->poll.data = p;
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
