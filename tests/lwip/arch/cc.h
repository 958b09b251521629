/* Platform definitions for the lwIP PPP peer (Linux, gcc): lwIP's defaults plus a random source. */
#ifndef LWIP_PEER_ARCH_CC_H
#define LWIP_PEER_ARCH_CC_H

#include <stdio.h>
#include <stdlib.h>

/* Diagnostics (lwIP's PPP packet trace) go to stdout, line by line, beside the peer's events. */
#define LWIP_PLATFORM_DIAG(x) do { printf x; fflush(stdout); } while (0)
#define LWIP_PLATFORM_ASSERT(x) do { printf("assertion \"%s\" failed at %s:%d\n", x, __FILE__, __LINE__); \
                                     fflush(stdout); abort(); } while (0)
#define LWIP_RAND() ((u32_t)random())

#endif
