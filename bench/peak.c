/* Run a command; write its peak RSS, as wait4 reports it, to a file.
 *
 *     peak OUT COMMAND [ARG...]
 *
 * The config checks of bench_peers.py and bench_floors.py run through it. Linux counts in a
 * process's ru_maxrss the memory it had before its exec, and a child forked (or vforked)
 * by the benchmark starts with the benchmark's own: a 40 MB harness made every smaller
 * check look 40 MB. Forked from this small program, the command's own peak shows.
 * Writes "<KiB>\n" to OUT; exits with the command's status, 128 + N if signal N ended it,
 * 127 if it could not be run, 125 if peak itself failed (fork, wait4 or OUT), 2 if called
 * wrong.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fputs("usage: peak OUT COMMAND [ARG...]\n", stderr);
        return 2;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("peak: fork");
        return 125;
    }
    if (child == 0) {
        execvp(argv[2], argv + 2);
        perror(argv[2]);
        _exit(127);
    }
    int status;
    struct rusage usage;
    if (wait4(child, &status, 0, &usage) < 0) {
        perror("peak: wait4");
        return 125;
    }
    FILE *out = fopen(argv[1], "w");
    if (out == NULL || fprintf(out, "%ld\n", usage.ru_maxrss) < 0 || fclose(out) != 0) {
        perror(argv[1]);
        return 125;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
