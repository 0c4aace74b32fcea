/* The request read deadline: a connection past it is shut down (its peer reads the end); one
 * that delivered its request, or is still within its time, is left alone. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "readguard.h"
#include "timeutil.h"

#define TIMEOUT_MS 200

/* 1 when the peer of pair[0] sees the end of the stream within ms. */
static int peer_sees_end(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return 0;
    char c;
    return read(fd, &c, 1) == 0;
}

static void test_past_the_deadline_is_cut_within_a_tenth_more(void **state)
{
    (void)state;
    int late[2], served[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, late), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, served), 0);
    assert_int_equal(readguard_start(TIMEOUT_MS), 0);
    int64_t t0 = time_monotonic_ms();
    readguard *g_late = readguard_open(late[0]);
    readguard *g_served = readguard_open(served[0]);
    readguard_read(g_served); /* its request is read whole: no deadline while it is served */
    assert_false(peer_sees_end(late[1], TIMEOUT_MS / 2));
    assert_true(peer_sees_end(late[1], TIMEOUT_MS * 3));
    int64_t took = time_monotonic_ms() - t0;
    assert_true(took >= TIMEOUT_MS && took <= TIMEOUT_MS * 2);
    assert_false(peer_sees_end(served[1], TIMEOUT_MS * 2));
    /* Replied: the next request has the timeout from now. */
    readguard_replied(g_served);
    assert_true(peer_sees_end(served[1], TIMEOUT_MS * 3));
    readguard_close(g_late);
    readguard_close(g_served);
    readguard_stop();
    for (int i = 0; i < 2; i++) {
        close(late[i]);
        close(served[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_past_the_deadline_is_cut_within_a_tenth_more),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
