/* The bare spawn limit of this machine: N children in flight, started by a C loop.
 *
 *     spawn N PROGRAM [ARG...]
 *
 * starts N copies of PROGRAM with posix_spawn (each in its own session, as cronplus starts
 * its jobs), then reaps them all, and prints "<last started> <all reaped>\n": seconds on
 * CLOCK_MONOTONIC from the first start. Built by bench/spawn_limit.py with `gcc -O2`.
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 3 || atoi(argv[1]) < 1) {
        fprintf(stderr, "usage: spawn N PROGRAM [ARG...]\n");
        return 2;
    }
    int n = atoi(argv[1]);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    posix_spawnattr_t attr;
    if (pids == NULL || posix_spawnattr_init(&attr) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID) != 0) {
        fprintf(stderr, "spawn: cannot set up\n");
        return 1;
    }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < n; i++) {
        int error = posix_spawn(&pids[i], argv[2], NULL, &attr, argv + 2, environ);
        if (error != 0) {
            fprintf(stderr, "spawn: %s: start %d of %d failed (error %d)\n", argv[2], i + 1, n,
                    error);
            return 1;
        }
    }
    double started = since(&start);
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "spawn: child %d did not exit 0\n", (int)pids[i]);
            return 1;
        }
    }
    printf("%.6f %.6f\n", started, since(&start));
    return 0;
}
