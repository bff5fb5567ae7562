/* ddf-ls: lists ddm's device tree with libDDM, as a tool written in C.
 *
 *   ddf-ls [-s SOCKET] [-b BUS] [-c CLASS] [-n NAME] [-d DRIVER] [-S STATE]
 *
 * Without a filter it prints the whole tree (ddf_ddm_tree); with filters,
 * the nodes that match all of them (ddf_ddm_find, as `ddmctl find`): BUS
 * is a kind of bus (pci) or a bus's path, CLASS char, block or bus, NAME
 * and DRIVER globs, STATE a driver state. One node a line:
 *
 *   /PATH CLASS MODE UID:GID DRIVER PID STATE
 *
 * with "-" for what a node does not have.
 *
 * Build: cc -o ddf-ls ddf-ls.c $(pkg-config --cflags --libs ddf)
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ddf.h>

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

int main(int argc, char **argv)
{
    const char *socket = NULL, *bus = NULL, *dev_class = NULL, *name = NULL, *driver = NULL, *state = NULL;
    ddf_ddm *ddm;
    ddf_nodes *nodes;
    int opt, rc;

    while ((opt = getopt(argc, argv, "s:b:c:n:d:S:")) != -1) {
        switch (opt) {
        case 's': socket = optarg; break;
        case 'b': bus = optarg; break;
        case 'c': dev_class = optarg; break;
        case 'n': name = optarg; break;
        case 'd': driver = optarg; break;
        case 'S': state = optarg; break;
        default:
            fprintf(stderr, "usage: ddf-ls [-s SOCKET] [-b BUS] [-c CLASS] [-n NAME] [-d DRIVER] [-S STATE]\n");
            return 2;
        }
    }
    rc = ddf_ddm_connect(socket, &ddm);
    if (rc < 0) {
        fprintf(stderr, "ddf-ls: cannot reach ddm: %s: %s\n", strerror(-rc), or_dash(ddf_last_error()));
        return 1;
    }
    if (bus || dev_class || name || driver || state)
        rc = ddf_ddm_find(ddm, bus, dev_class, name, driver, state, &nodes);
    else
        rc = ddf_ddm_tree(ddm, &nodes);
    ddf_ddm_free(ddm);
    if (rc < 0) {
        fprintf(stderr, "ddf-ls: %s: %s\n", strerror(-rc), or_dash(ddf_last_error()));
        return 1;
    }
    for (size_t i = 0; i < ddf_nodes_count(nodes); i++) {
        const ddf_node *n = ddf_nodes_get(nodes, i);
        char pid[16] = "-";
        if (n->pid >= 0)
            snprintf(pid, sizeof pid, "%d", n->pid);
        printf("/%s %s %04o %u:%u %s %s %s\n", n->path, n->dev_class, n->mode, n->uid, n->gid, or_dash(n->driver),
               pid, or_dash(n->state));
    }
    ddf_nodes_free(nodes);
    return 0;
}
