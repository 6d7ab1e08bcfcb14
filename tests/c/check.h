/* check.h: the few lines of test harness the C unit tests share.
 *
 * CHECK(cond) counts a pass or a failure and prints each failure with its
 * file and line; CHECK_REPORT(name) prints "name: N passed, M failed" and
 * gives main's exit status. No framework: the tests stay plain programs. */
#ifndef PULSAR_TEST_CHECK_H
#define PULSAR_TEST_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (cond) {                                                        \
            passed++;                                                      \
        } else {                                                           \
            failed++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
        }                                                                  \
    } while (0)

#define CHECK_REPORT(name)                                                 \
    (printf("%s: %d passed, %d failed\n", (name), passed, failed),         \
     failed ? 1 : 0)

#endif
