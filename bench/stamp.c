/* The benchmark jobs' payload: note when this process began running, then exit.
 *
 *     stamp FILE
 *
 * appends "<CRONPLUS_JOB> <CRONPLUS_SCHEDULED_AT> <CLOCK_REALTIME as s.nnnnnnnnn>\n" to FILE.
 * The clock is read first thing, so the stamp is as close to the exec as it gets. The line
 * goes out in one write() on an O_APPEND descriptor, so a thousand stamps written at once
 * never interleave (Linux appends each write atomically on a local file system).
 * Built by bench/bench_runonce.py with `gcc -O2 -static` (no dynamic loader to wait for).
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (argc != 2) {
        static const char usage[] = "usage: stamp FILE\n";
        (void)write(2, usage, sizeof usage - 1);
        return 2;
    }
    const char *job = getenv("CRONPLUS_JOB");
    const char *slot = getenv("CRONPLUS_SCHEDULED_AT");
    char line[512];
    int size = snprintf(line, sizeof line, "%s %s %lld.%09ld\n", job ? job : "-",
                        slot ? slot : "-", (long long)now.tv_sec, now.tv_nsec);
    if (size < 0 || (size_t)size >= sizeof line) {
        static const char long_env[] = "stamp: CRONPLUS_JOB or CRONPLUS_SCHEDULED_AT too long\n";
        (void)write(2, long_env, sizeof long_env - 1);
        return 3;
    }
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    if (write(fd, line, (size_t)size) != size) {
        perror(argv[1]);
        return 1;
    }
    return close(fd) == 0 ? 0 : 1;
}
