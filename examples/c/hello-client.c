/* hello-client: calls the hello driver directly, with libddf's client
 * proxy: no FUSE, no ddm in the path of the calls.
 *
 *   hello-client [-s SOCKET] [-f] [-c | -w TEXT] DEVICE
 *
 * It opens DEVICE (/ddf/hello), a file under ddm's mount: that open is the
 * permission check, done by the kernel against the file's mode, owner and
 * ACL. It then asks ddm (at SOCKET, default /run/ddf/control.sock) for a
 * direct link to the device's driver, with the open file as its proof, and
 * reads the device to its end, printing what it reads; with -c it asks for
 * the greeting count instead (the HELLO_GET_GREETINGS ioctl) and prints it;
 * with -w it opens DEVICE for writing and writes TEXT, printing how many
 * bytes the driver took. With -f it does the same through the file
 * (read(2), ioctl(2), write(2)), for comparison. Exits 1 with a message
 * when something fails.
 *
 * Build: cc -o hello-client hello-client.c -I drivers/hello $(pkg-config --cflags --libs ddf)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <ddf.h>

#include "hello.h"

static int fail(const char *what, int err)
{
    const char *more = ddf_last_error();
    fprintf(stderr, "hello-client: %s: %s%s%s\n", what, strerror(err), more ? ": " : "", more ? more : "");
    return 1;
}

/* Through the file, as any program would. */
static int by_file(int fd, int count, const char *text)
{
    char buf[4096];
    ssize_t n;
    uint64_t greetings;

    if (text) {
        n = write(fd, text, strlen(text));
        if (n < 0)
            return fail("write", errno);
        printf("%zd\n", n);
        return 0;
    }
    if (count) {
        if (ioctl(fd, HELLO_GET_GREETINGS, &greetings) < 0)
            return fail("ioctl", errno);
        printf("%" PRIu64 "\n", greetings);
        return 0;
    }
    while ((n = read(fd, buf, sizeof buf)) > 0)
        fwrite(buf, 1, (size_t)n, stdout);
    return n < 0 ? fail("read", errno) : 0;
}

/* Straight to the driver. */
static int direct(const char *socket, int fd, int count, const char *text)
{
    ddf_ddm *ddm;
    ddf_client *client;
    uint64_t handle, offset = 0, greetings = 0;
    char buf[4096];
    size_t got = 0;
    int32_t result = 0;
    ssize_t n;
    int rc;

    rc = ddf_ddm_connect(socket, &ddm);
    if (rc < 0)
        return fail("cannot reach ddm", -rc);
    rc = ddf_connect_device(ddm, fd, &client);
    ddf_ddm_free(ddm);
    if (rc < 0)
        return fail("no direct link", -rc);
    rc = ddf_client_open(client, text ? O_WRONLY : O_RDONLY, &handle);
    if (rc < 0) {
        ddf_client_free(client);
        return fail("open", -rc);
    }
    if (text) {
        n = ddf_client_write(client, handle, 0, text, strlen(text));
        if (n >= 0)
            printf("%zd\n", n);
        rc = n < 0 ? (int)n : 0;
    } else if (count) {
        rc = ddf_client_ioctl(client, handle, HELLO_GET_GREETINGS, NULL, 0, &greetings, sizeof greetings, &got,
                              &result);
        if (rc == 0 && got == sizeof greetings)
            printf("%" PRIu64 "\n", greetings);
    } else {
        while ((n = ddf_client_read(client, handle, offset, buf, sizeof buf)) > 0) {
            fwrite(buf, 1, (size_t)n, stdout);
            offset += (uint64_t)n;
        }
        rc = n < 0 ? (int)n : 0;
    }
    ddf_client_close(client, handle);
    ddf_client_free(client);
    if (rc < 0)
        return fail(text ? "write" : count ? "ioctl" : "read", -rc);
    return 0;
}

int main(int argc, char **argv)
{
    const char *socket = NULL, *text = NULL;
    int count = 0, file = 0, opt, fd, rc;

    while ((opt = getopt(argc, argv, "s:fcw:")) != -1) {
        switch (opt) {
        case 's':
            socket = optarg;
            break;
        case 'f':
            file = 1;
            break;
        case 'c':
            count = 1;
            break;
        case 'w':
            text = optarg;
            break;
        default:
            fprintf(stderr, "usage: hello-client [-s SOCKET] [-f] [-c | -w TEXT] DEVICE\n");
            return 2;
        }
    }
    if (optind + 1 != argc || (count && text)) {
        fprintf(stderr, "usage: hello-client [-s SOCKET] [-f] [-c | -w TEXT] DEVICE\n");
        return 2;
    }
    fd = open(argv[optind], text ? O_WRONLY : O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "hello-client: cannot open %s: %s\n", argv[optind], strerror(errno));
        return 1;
    }
    rc = file ? by_file(fd, count, text) : direct(socket, fd, count, text);
    close(fd);
    return rc;
}
