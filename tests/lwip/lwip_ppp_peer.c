/*
 * A PPP client built from lwIP's PPP (a port of pppd's state machines, written by others), for the
 * test suite: it runs lwIP's PPP over a byte stream (async HDLC, "pppos") on a file descriptor it
 * inherits, so that the real sstpc can carry it to vpnd.
 *
 *   lwip-ppp-peer --fd N --user U --password P [--auth pap|chap|mschap|mschapv2|any]
 *                 [--mppe off|require] [--echo-interval S] [--echo-fails N]
 *
 * IPCP and IPV6CP are both always opened (lwIP has no run-time switch for either).
 *
 * Lines on stdin are commands:  ping4 ADDRESS SEQ | ping6 ADDRESS SEQ | close
 * Lines on stdout that start with "@ " are events (the rest is lwIP's own PPP trace):
 *   @ phase N                          lwIP's PPP phase (ppp.h PPP_PHASE_*)
 *   @ authenticated send=HEX recv=HEX  the MS-CHAP start keys (client view), or "keys=none"
 *   @ ccp transmit=M receive=M         CCP opened with these methods (ccp.h CI_*; 18 = MPPE)
 *   @ ip4 local=A peer=B               IPCP opened
 *   @ ip6cp local=A peer=B             IPV6CP opened: both link-local addresses
 *   @ ip6 address=A state=S            an IPv6 address of the interface (link-local, SLAAC)
 *   @ pong4 seq=N from=A / pong6 ...   an ICMP Echo Reply to our ping
 *   @ status CODE                      the link status callback (ppp.h PPPERR_*)
 *   @ exit                             the link is dead and the program ends
 * lwIP answers ICMP and ICMPv6 Echo Requests itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lwip/icmp.h"
#include "lwip/inet_chksum.h"
#include "lwip/init.h"
#include "lwip/ip.h"
#include "lwip/netif.h"
#include "lwip/prot/icmp6.h"
#include "lwip/raw.h"
#include "lwip/timeouts.h"
#include "netif/ppp/eui64.h"
#include "netif/ppp/ppp_impl.h"
#include "netif/ppp/pppos.h"

#define PING_ID 0x4c57 /* "LW" */

static int stream_fd = -1;
static int link_dead;
static struct netif ppp_netif;

u32_t sys_now(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (u32_t)(now.tv_sec * 1000 + now.tv_nsec / 1000000);
}

/* lwIP's PPP stirs its random pool with this (magic.c). */
u32_t sys_jiffies(void) { return sys_now(); }

static void event(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void event(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fputs("@ ", stdout);
  vprintf(format, args);
  fputc('\n', stdout);
  fflush(stdout);
  va_end(args);
}

static u32_t write_stream(ppp_pcb *pcb, u8_t *data, u32_t len, void *ctx) {
  (void)pcb;
  (void)ctx;
  u32_t done = 0;
  while (done < len) {
    ssize_t n = write(stream_fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return done;
    done += (u32_t)n;
  }
  return done;
}

static void hex(char *out, const u8_t *data, size_t len) {
  for (size_t i = 0; i < len; i++) sprintf(out + 2 * i, "%02x", data[i]);
}

static void on_phase(ppp_pcb *pcb, u8_t phase, void *ctx) {
  (void)ctx;
  event("phase %u", phase);
  static int reported;
  /* The first time: authentication (if any) has succeeded. lwIP passes through this phase again
   * while it takes the link down. */
  if (phase == PPP_PHASE_NETWORK && !reported) {
    reported = 1;
    if (pcb->mppe_keys_set) {
      char send[33], recv[33];
      hex(send, pcb->mppe_comp.master_key, 16);
      hex(recv, pcb->mppe_decomp.master_key, 16);
      event("authenticated send=%s recv=%s", send, recv);
    } else {
      event("authenticated keys=none");
    }
  }
}

static void on_status(ppp_pcb *pcb, int code, void *ctx) {
  (void)pcb;
  (void)ctx;
  event("status %d", code);
  if (code != PPPERR_NONE) link_dead = 1;
}

static u8_t on_icmp(void *arg, struct raw_pcb *pcb, struct pbuf *p, const ip_addr_t *from) {
  (void)arg;
  (void)pcb;
  u8_t header[8];
  int ipv6 = IP_IS_V6(from);
  /* raw pcbs see the packet from its IP header on */
  u16_t skip = ipv6 ? IP6_HLEN : (u16_t)(IPH_HL_BYTES((struct ip_hdr *)p->payload));
  if (pbuf_copy_partial(p, header, sizeof header, skip) != sizeof header) return 0;
  u8_t reply = ipv6 ? ICMP6_TYPE_EREP : ICMP_ER;
  if (header[0] != reply || ((header[4] << 8) | header[5]) != PING_ID) return 0;
  event("pong%c seq=%u from=%s", ipv6 ? '6' : '4', (header[6] << 8) | header[7], ipaddr_ntoa(from));
  pbuf_free(p);
  return 1;
}

static void ping(struct raw_pcb *pcb, const char *address, unsigned seq) {
  ip_addr_t destination;
  if (!ipaddr_aton(address, &destination)) {
    event("error bad address %s", address);
    return;
  }
  static const char payload[] = "lwip-ppp-peer ping";
  struct pbuf *p = pbuf_alloc(PBUF_IP, (u16_t)(8 + sizeof payload), PBUF_RAM);
  if (p == NULL) return;
  u8_t *icmp = p->payload;
  icmp[0] = IP_IS_V6(&destination) ? ICMP6_TYPE_EREQ : ICMP_ECHO;
  icmp[1] = icmp[2] = icmp[3] = 0;
  icmp[4] = PING_ID >> 8;
  icmp[5] = PING_ID & 0xff;
  icmp[6] = (u8_t)(seq >> 8);
  icmp[7] = (u8_t)seq;
  memcpy(icmp + 8, payload, sizeof payload);
  if (!IP_IS_V6(&destination)) {
    u16_t sum = inet_chksum(icmp, p->len);
    memcpy(icmp + 2, &sum, 2);
  } /* for ICMPv6 the raw pcb fills in the checksum (it covers a pseudo-header) */
  err_t err = raw_sendto(pcb, p, &destination);
  if (err != ERR_OK) event("error ping %s: lwIP error %d", address, err);
  pbuf_free(p);
}

static void report_addresses(void) {
  static int ip4_seen;
  static u8_t ip6_state[LWIP_IPV6_NUM_ADDRESSES];
  if (!ip4_seen && !ip4_addr_isany_val(*netif_ip4_addr(&ppp_netif))) {
    ip4_seen = 1;
    char local[16];
    strcpy(local, ip4addr_ntoa(netif_ip4_addr(&ppp_netif)));
    event("ip4 local=%s peer=%s", local, ip4addr_ntoa(netif_ip4_gw(&ppp_netif)));
  }
  for (int i = 0; i < LWIP_IPV6_NUM_ADDRESSES; i++) {
    u8_t state = netif_ip6_addr_state(&ppp_netif, i);
    if (state != ip6_state[i] && ip6_addr_isvalid(state)) {
      event("ip6 address=%s state=%u", ip6addr_ntoa(netif_ip6_addr(&ppp_netif, i)), state);
    }
    ip6_state[i] = state;
  }
}

static void link_local(char *out, const eui64_t *id) {
  const u8_t *b = id->e8;
  sprintf(out, "fe80::%x:%x:%x:%x", (b[0] << 8) | b[1], (b[2] << 8) | b[3], (b[4] << 8) | b[5],
          (b[6] << 8) | b[7]);
}

static void report_ipv6cp(ppp_pcb *pcb) {
  static int seen;
  if (!seen && pcb->ipv6cp_is_up) {
    seen = 1;
    char local[40], peer[40];
    link_local(local, &pcb->ipv6cp_gotoptions.ourid);
    link_local(peer, &pcb->ipv6cp_hisoptions.hisid);
    event("ip6cp local=%s peer=%s", local, peer);
  }
}

static void report_ccp(ppp_pcb *pcb) {
  static int seen;
  if (!seen && pcb->ccp_fsm.state == PPP_FSM_OPENED) {
    seen = 1;
    event("ccp transmit=%u receive=%u", pcb->ccp_transmit_method, pcb->ccp_receive_method);
  }
}

static void command(ppp_pcb *pcb, struct raw_pcb *ping4, struct raw_pcb *ping6, char *line) {
  char verb[16], address[64];
  unsigned seq;
  if (sscanf(line, "%15s %63s %u", verb, address, &seq) == 3 && strcmp(verb, "ping4") == 0) {
    ping(ping4, address, seq);
  } else if (sscanf(line, "%15s %63s %u", verb, address, &seq) == 3 && strcmp(verb, "ping6") == 0) {
    ping(ping6, address, seq);
  } else if (strncmp(line, "close", 5) == 0) {
    ppp_close(pcb, 0); /* LCP Terminate-Request */
  } else {
    event("error unknown command %s", line);
  }
}

static int auth_type(const char *name) {
  if (strcmp(name, "pap") == 0) return PPPAUTHTYPE_PAP;
  if (strcmp(name, "chap") == 0) return PPPAUTHTYPE_CHAP;
  if (strcmp(name, "mschap") == 0) return PPPAUTHTYPE_MSCHAP;
  if (strcmp(name, "mschapv2") == 0) return PPPAUTHTYPE_MSCHAP_V2;
  if (strcmp(name, "any") == 0) return PPPAUTHTYPE_ANY;
  fprintf(stderr, "unknown --auth %s\n", name);
  exit(2);
}

int main(int argc, char **argv) {
  const char *user = "", *password = "", *auth = "any", *mppe = "off";
  int echo_interval = 0, echo_fails = 3;
  static const struct option options[] = {
      {"fd", required_argument, 0, 'f'},        {"user", required_argument, 0, 'u'},
      {"password", required_argument, 0, 'p'},  {"auth", required_argument, 0, 'a'},
      {"mppe", required_argument, 0, 'm'},      {"echo-interval", required_argument, 0, 'e'},
      {"echo-fails", required_argument, 0, 'F'},
      {0, 0, 0, 0}};
  for (int c; (c = getopt_long(argc, argv, "", options, NULL)) != -1;) {
    switch (c) {
      case 'f': stream_fd = atoi(optarg); break;
      case 'u': user = optarg; break;
      case 'p': password = optarg; break;
      case 'a': auth = optarg; break;
      case 'm': mppe = optarg; break;
      case 'e': echo_interval = atoi(optarg); break;
      case 'F': echo_fails = atoi(optarg); break;
      default: return 2;
    }
  }
  if (stream_fd < 0) {
    fprintf(stderr, "usage: %s --fd N --user U --password P [options]\n", argv[0]);
    return 2;
  }
  srandom((unsigned)(time(NULL) ^ getpid()));
  lwip_init();

  ppp_pcb *pcb = pppos_create(&ppp_netif, write_stream, on_status, NULL);
  if (pcb == NULL) return 1;
  ppp_set_notify_phase_callback(pcb, on_phase);
  ppp_set_auth(pcb, (u8_t)auth_type(auth), user, password);
  ppp_set_mppe(pcb, strcmp(mppe, "require") == 0 ? PPP_MPPE_ENABLE : PPP_MPPE_DISABLE);
  pcb->settings.lcp_echo_interval = (u8_t)echo_interval;
  pcb->settings.lcp_echo_fails = (u8_t)echo_fails;
  pcb->ipv6cp_wantoptions.neg_ifaceid = 1; /* ask for our interface identifier, as pppd does */
  netif_set_default(&ppp_netif);
  ppp_netif.ip6_autoconfig_enabled = 1; /* SLAAC from the router advertisements */
  ppp_connect(pcb, 0);

  struct raw_pcb *ping4 = raw_new(IP_PROTO_ICMP);
  struct raw_pcb *ping6 = raw_new_ip6(IP6_NEXTH_ICMP6);
  raw_recv(ping4, on_icmp, NULL);
  raw_recv(ping6, on_icmp, NULL);
  ping6->chksum_reqd = 1;
  ping6->chksum_offset = 2;

  char line[256];
  size_t line_len = 0;
  int stdin_open = 1;
  while (!(link_dead && pcb->phase == PPP_PHASE_DEAD)) {
    u32_t sleep_ms = sys_timeouts_sleeptime();
    struct pollfd fds[2] = {{stream_fd, POLLIN, 0}, {stdin_open ? 0 : -1, POLLIN, 0}};
    int timeout = sleep_ms == SYS_TIMEOUTS_SLEEPTIME_INFINITE ? 1000 : (int)(sleep_ms > 1000 ? 1000 : sleep_ms);
    if (poll(fds, 2, timeout) < 0 && errno != EINTR) break;
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      u8_t buffer[4096];
      ssize_t n = read(stream_fd, buffer, sizeof buffer);
      if (n <= 0) {
        event("stream closed");
        break;
      }
      pppos_input(pcb, buffer, (int)n);
    }
    if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(0, line + line_len, sizeof line - 1 - line_len);
      if (n <= 0) {
        stdin_open = 0;
      } else {
        line_len += (size_t)n;
        char *newline;
        while ((newline = memchr(line, '\n', line_len)) != NULL) {
          *newline = 0;
          command(pcb, ping4, ping6, line);
          line_len -= (size_t)(newline + 1 - line);
          memmove(line, newline + 1, line_len);
        }
        if (line_len == sizeof line - 1) line_len = 0;
      }
    }
    sys_check_timeouts();
    report_addresses();
    report_ccp(pcb);
    report_ipv6cp(pcb);
  }
  event("exit");
  return 0;
}
