/*
 * The web page: GET / is web/index.html, GET /ui/<path> the other files of web/ (ui_assets.h).
 * Each reply carries a Content-Security-Policy that allows this origin's scripts and styles only
 * (nothing inline, no framing), and an ETag: the browser asks again each time (no-cache) and gets
 * a bodiless 304 while the file is the same.
 */
#include <string.h>

#include "api.h"
#include "mem.h"
#include "ui_assets.h"

#define UI_PREFIX "/ui/"

static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

static const ui_asset *find(const char *name)
{
    for (size_t i = 0; i < ui_n_assets; i++)
        if (!strcmp(ui_assets[i].name, name))
            return &ui_assets[i];
    return NULL;
}

/* 1 when an If-None-Match list names etag (or is "*"). */
static int not_modified(const char *if_none_match, const char *etag)
{
    if (!if_none_match)
        return 0;
    if (!strcmp(if_none_match, "*"))
        return 1;
    /* A weak "W/" prefix compares the same for a GET (RFC 9110, 13.1.2). */
    size_t n = strlen(etag);
    for (const char *p = strstr(if_none_match, etag); p; p = strstr(p + 1, etag))
        if ((p[n] == '\0' || p[n] == ',' || p[n] == ' ') &&
            (p == if_none_match || p[-1] == ' ' || p[-1] == ',' || p[-1] == '/'))
            return 1;
    return 0;
}

static void serve(http_req *r, const ui_asset *a)
{
    http_add_header(r, "Content-Security-Policy", csp);
    http_add_header(r, "X-Frame-Options", "DENY");
    http_add_header(r, "Referrer-Policy", "no-referrer");
    http_add_header(r, "Cache-Control", "no-cache");
    http_add_header(r, "ETag", a->etag);
    if (not_modified(http_header(r, "If-None-Match"), a->etag))
        http_text(r, 304, xstrdup(""), a->content_type);
    else
        http_text(r, 200, xstrdup(a->data), a->content_type);
}

void route_ui_page(http_req *r)
{
    const ui_asset *a = find("index.html");
    if (!a) {
        http_error(r, 404, "this build has no web page");
        return;
    }
    serve(r, a);
}

void route_ui_asset(http_req *r)
{
    const ui_asset *a = find(r->path + strlen(UI_PREFIX));
    if (!a) {
        http_error(r, 404, "no file %s in the web page", r->path);
        return;
    }
    serve(r, a);
}
