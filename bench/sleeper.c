/* The idle floor in C: wake every SECONDS and do nothing else (bench/bench_floors.py).
 *
 *     sleeper SECONDS
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 2 || atoi(argv[1]) <= 0) {
        fputs("usage: sleeper SECONDS\n", stderr);
        return 2;
    }
    struct timespec period = {.tv_sec = atoi(argv[1]), .tv_nsec = 0};
    for (;;) {
        nanosleep(&period, NULL);
    }
}
