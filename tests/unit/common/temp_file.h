/* A helper of the unit tests of common/ (include after <cmocka.h>). */
#ifndef CALC_TEST_TEMP_FILE_H
#define CALC_TEST_TEMP_FILE_H

#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/* Writes content to a new file under /tmp; its path goes to path (len bytes). Unlink it after. */
static inline void temp_file(char *path, size_t len, const char *content)
{
    snprintf(path, len, "/tmp/calc-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
}

#endif
