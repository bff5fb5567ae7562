/* hello.h: what the hello driver and its clients share. */
#ifndef HELLO_H
#define HELLO_H

#include <stdint.h>
#include <sys/ioctl.h>

/* ioctl(fd, HELLO_GET_GREETINGS, &n): n (a uint64_t) is how many times the
 * device has said hello, across restarts of its driver. */
#define HELLO_GET_GREETINGS _IOR('h', 1, uint64_t)

#endif
