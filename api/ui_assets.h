/* ui_assets: the files of the web page (web/), built into calc-api by cmake/embed_assets.cmake. */
#ifndef CALC_UI_ASSETS_H
#define CALC_UI_ASSETS_H

#include <stddef.h>

typedef struct ui_asset {
    const char *name;         /* its path under web/, e.g. "js/app.js" */
    const char *content_type; /* from its extension */
    const char *data;         /* its bytes, then a NUL */
    size_t len;
    const char *etag; /* a quoted hash of the bytes */
} ui_asset;

extern const ui_asset ui_assets[];
extern const size_t ui_n_assets;

#endif
