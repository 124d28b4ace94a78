/* ui.c - the operator's console at GET /ui: serves the files of syncd/ui/
 * that the build embedded into syncd_ui_files.
 *
 * The console is static: every piece of data it shows comes from the API
 * of the node that served it (and, for the health view, from the other
 * nodes' APIs, which allow its origin through CORS). The files are sent
 * with a Content-Security-Policy that allows scripts and styles from this
 * node only, and with "Cache-Control: no-cache" plus a content ETag, so a
 * browser revalidates with one 304 and never runs the files of an older
 * binary.
 */
#include "ui.h"

#include <stdio.h>
#include <string.h>

/* Scripts and styles only from the node itself, no inline script, no
 * plugins, no framing; the API calls go to this node and to the other
 * nodes of the cluster (any http(s) origin: their URLs are only known at
 * run time, and each of them decides through CORS whether to answer). */
#define CSP                                                                    \
    "default-src 'none'; script-src 'self'; style-src 'self'; "                \
    "img-src 'self' data:; connect-src 'self' http: https:; "                  \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

int syncd_ui_path(const char *path)
{
    return strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0;
}

/* Returns 1 when the If-None-Match value inm names etag (or is "*"). */
static int etag_matches(const char *inm, const char *etag)
{
    size_t n = strlen(etag);
    const char *p;

    if (inm == NULL)
        return 0;
    if (strcmp(inm, "*") == 0)
        return 1;
    for (p = strstr(inm, etag); p != NULL; p = strstr(p + 1, etag))
        if (p[n] == '\0' || p[n] == ',' || p[n] == ' ')
            return 1;
    return 0;
}

void syncd_ui_serve(syncd_http_req_t *req)
{
    static const char not_get[] = "{\"error\":\"method_not_allowed\","
                                  "\"message\":\"the console is read with "
                                  "GET\"}";
    const char *path = syncd_http_path(req);
    const syncd_ui_file_t *f;
    char headers[512];

    if (strcmp(syncd_http_method(req), "GET") != 0) {
        syncd_http_respond(req, 405, "application/json", "Allow: GET\r\n",
                           not_get, sizeof(not_get) - 1);
        return;
    }
    if (strcmp(path, "/ui") == 0 || strcmp(path, "/ui/") == 0)
        path = "/ui/index.html";
    for (f = syncd_ui_files; f->path != NULL; f++)
        if (strcmp(f->path, path) == 0)
            break;
    if (f->path == NULL) {
        syncd_http_respond_error(req, 404, "not_found",
                                 "no such file in the console");
        return;
    }
    snprintf(headers, sizeof(headers),
             "ETag: %s\r\nCache-Control: no-cache\r\n"
             "Content-Security-Policy: " CSP "\r\n"
             "X-Content-Type-Options: nosniff\r\n"
             "Referrer-Policy: no-referrer\r\n",
             f->etag);
    if (etag_matches(syncd_http_header(req, "If-None-Match"), f->etag))
        syncd_http_respond(req, 304, NULL, headers, "", 0);
    else
        syncd_http_respond(req, 200, f->content_type, headers,
                           (const char *)f->data, f->len);
}
