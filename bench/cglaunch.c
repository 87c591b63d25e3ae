/*
 * The baseline a launch under cgroup limits is measured against: the least a program
 * can do to run a command in cgroups of its own with a memory, cpu and pids limit on
 * cgroup v1 — mkdir one cgroup per hierarchy (memory, cpu, cpuacct, pids, freezer)
 * under its own, write the limits, fork, join (write 0 into each `tasks`), exec, wait,
 * rmdir. No parsing, no logs, no result, no checks beyond return codes.
 *
 *   cglaunch MEMORY_BYTES CPU_QUOTA_US PIDS -- CMD ARGS...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ctrls[] = {"memory", "cpu", "cpuacct", "pids", "freezer"};
#define N (sizeof ctrls / sizeof ctrls[0])

/* Our own path in the hierarchy of `ctrl`, from /proc/self/cgroup. */
static int own(const char *ctrl, char *out, size_t len) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[4096];
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *b = 0;
        char *list = a + 1, *tok, *save;
        for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (strcmp(tok, ctrl) == 0) {
                b[strcspn(b + 1, "\n") + 1] = 0;
                snprintf(out, len, "/sys/fs/cgroup/%s%s", ctrl, b + 1);
                fclose(f);
                return 0;
            }
        }
    }
    fclose(f);
    return -1;
}

static int put(const char *dir, const char *file, const char *value) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    int fd = open(p, O_WRONLY);
    if (fd < 0) return -1;
    int ok = write(fd, value, strlen(value)) == (ssize_t)strlen(value);
    close(fd);
    return ok ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "usage: cglaunch MEMORY CPU_QUOTA_US PIDS -- CMD...\n");
        return 2;
    }
    char dirs[N][4096];
    int fds[N];
    for (size_t i = 0; i < N; i++) {
        char base[4096];
        if (own(ctrls[i], base, sizeof base) < 0) return 125;
        snprintf(dirs[i], sizeof dirs[i], "%s/cglaunch-%d", base, getpid());
        if (mkdir(dirs[i], 0755) < 0) return 125;
    }
    if (put(dirs[0], "memory.limit_in_bytes", argv[1]) < 0) return 125;
    if (put(dirs[1], "cpu.cfs_quota_us", argv[2]) < 0) return 125;
    if (put(dirs[3], "pids.max", argv[3]) < 0) return 125;
    for (size_t i = 0; i < N; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/tasks", dirs[i]);
        fds[i] = open(p, O_WRONLY | O_CLOEXEC);
        if (fds[i] < 0) return 125;
    }
    pid_t pid = fork();
    if (pid == 0) {
        for (size_t i = 0; i < N; i++)
            if (write(fds[i], "0", 1) != 1) _exit(125);
        execvp(argv[5], argv + 5);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    for (size_t i = 0; i < N; i++) {
        close(fds[i]);
        while (rmdir(dirs[i]) < 0 && errno == EBUSY) usleep(1000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
