// node-probe: what a container really gets, printed as `key=value` lines for the real-node
// integration test to read back through the apiserver (pods/log). It reports, from inside:
// the uid and gid, whether / is writable, the capability sets and seccomp mode from
// /proc/self/status, no_new_privs, and whether the directory named by $PROBE_WRITE_DIR (an
// emptyDir) is writable. With $PROBE_HOLD_SECONDS it then stays up that long (a pod that is
// Running when its node is torn down). Built statically so the image needs nothing else.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void print_status_field(const char* field, const char* key) {
  FILE* status = fopen("/proc/self/status", "r");
  if (!status) {
    printf("%s=unreadable:%s\n", key, strerror(errno));
    return;
  }
  char line[512];
  size_t length = strlen(field);
  while (fgets(line, sizeof(line), status)) {
    if (strncmp(line, field, length) == 0 && line[length] == ':') {
      char* value = line + length + 1;
      while (*value == ' ' || *value == '\t') ++value;
      value[strcspn(value, "\n")] = '\0';
      printf("%s=%s\n", key, value);
      fclose(status);
      return;
    }
  }
  printf("%s=absent\n", key);
  fclose(status);
}

// "yes" when a file can be created (and is removed again), else the errno's name.
static void print_writable(const char* dir, const char* key) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/.node-probe-%d", dir, (int)getpid());
  int fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0600);
  if (fd < 0) {
    printf("%s=no:%s\n", key, strerror(errno));
    return;
  }
  close(fd);
  unlink(path);
  printf("%s=yes\n", key);
}

int main(void) {
  printf("uid=%d\n", (int)getuid());
  printf("gid=%d\n", (int)getgid());
  print_writable("/", "root_writable");
  const char* write_dir = getenv("PROBE_WRITE_DIR");
  if (write_dir && *write_dir) print_writable(write_dir, "write_dir_writable");
  print_status_field("CapInh", "cap_inh");
  print_status_field("CapPrm", "cap_prm");
  print_status_field("CapEff", "cap_eff");
  print_status_field("CapBnd", "cap_bnd");
  print_status_field("CapAmb", "cap_amb");
  print_status_field("NoNewPrivs", "no_new_privs");
  print_status_field("Seccomp", "seccomp");
  printf("probe=done\n");
  fflush(stdout);
  const char* hold = getenv("PROBE_HOLD_SECONDS");
  if (hold && *hold) sleep((unsigned)atoi(hold));
  return 0;
}
