/* lwIP options for the test suite's PPP peer: no OS (NO_SYS), PPP over a byte stream, IPv4 and
 * IPv6, every authentication method lwIP has as a client, MPPE, and lwIP's packet trace on. */
#ifndef LWIP_PEER_LWIPOPTS_H
#define LWIP_PEER_LWIPOPTS_H

#define NO_SYS                      1
#define SYS_LIGHTWEIGHT_PROT        0
#define LWIP_NETCONN                0
#define LWIP_SOCKET                 0
#define MEM_ALIGNMENT               8
#define MEM_SIZE                    (256 * 1024)
#define PBUF_POOL_SIZE              64
#define MEMP_NUM_SYS_TIMEOUT        16

#define LWIP_IPV4                   1
#define LWIP_IPV6                   1
#define LWIP_ICMP                   1
#define LWIP_RAW                    1
#define LWIP_UDP                    1
#define LWIP_TCP                    0
#define LWIP_ARP                    0
#define LWIP_ETHERNET               0
#define LWIP_DHCP                   0
#define LWIP_IPV6_MLD               0
#define LWIP_IPV6_AUTOCONFIG        1
#define LWIP_IPV6_SEND_ROUTER_SOLICIT 1
#define LWIP_IPV6_DUP_DETECT_ATTEMPTS 0
#define LWIP_ND6_ALLOW_RA_UPDATES   1
#define LWIP_IPV6_FRAG              0
#define LWIP_IPV6_REASS             0
#define IP_REASSEMBLY               0
#define IP_FRAG                     0
#define LWIP_NETIF_STATUS_CALLBACK  1

#define PPP_SUPPORT                 1
#define PPPOS_SUPPORT               1
#define PPP_IPV4_SUPPORT            1
#define PPP_IPV6_SUPPORT            1
#define PAP_SUPPORT                 1
#define CHAP_SUPPORT                1
#define MSCHAP_SUPPORT              1
#define MPPE_SUPPORT                1
#define EAP_SUPPORT                 0
#define VJ_SUPPORT                  0
#define CCP_SUPPORT                 1
#define PPP_NOTIFY_PHASE            1
#define LWIP_INCLUDED_POLARSSL_MD4  1
#define LWIP_INCLUDED_POLARSSL_MD5  1
#define LWIP_INCLUDED_POLARSSL_SHA1 1
#define LWIP_INCLUDED_POLARSSL_DES  1
#define LWIP_INCLUDED_POLARSSL_ARC4 1

/* lwIP's own trace of every PPP packet it sends and receives ("sent [LCP EchoReq ...]"). */
#define LWIP_DEBUG                  1
#define PPP_DEBUG                   LWIP_DBG_ON
#define PRINTPKT_SUPPORT            1
#define LWIP_DBG_MIN_LEVEL          LWIP_DBG_LEVEL_ALL

#endif
