"""IPv6 link services on a PPP session: router advertisements, SLAAC, and DHCPv6 prefix delegation.

Sans-I/O like the rest of `vpnd.proto`: objects take raw IPv6 packets from the PPP link and the
time, and hand back raw IPv6 packets to send on that link, events and the next timer deadline:

    obj.receive_packet(packet, now)
    for packet in obj.packets_to_send(): ...
    while (event := obj.next_event()) is not None: ...
    deadline = obj.get_timer(); obj.handle_timer(now)

`packets.classify` picks the packets the runtime hands over instead of writing them to the TUN:

- server side: ROUTER_SOLICITATION and NEIGHBOR_SOLICITATION → `nd.RouterAdvertiser`,
  DHCPV6_TO_SERVER → `dhcpv6.Dhcpv6Server`; a client's ROUTER_ADVERTISEMENT or DHCPV6_TO_CLIENT
  is dropped (only the server advertises and serves on the link);
- client side: ROUTER_ADVERTISEMENT and NEIGHBOR_SOLICITATION → `nd.RouterSolicitor`,
  DHCPV6_TO_CLIENT → `dhcpv6.Dhcpv6PdClient`; the rest of those kinds is dropped.

Everything else (OTHER) is ordinary traffic for the kernel. Packets the objects hand back go to
the peer on the same PPP link as IPv6 (never into the TUN).

Neighbor solicitations are answered here (for the server's fe80::<id>, and for the client's
link-local and SLAAC addresses) so that nothing depends on the kernel doing ND on a TUN, which
has no link-layer addresses; solicitations for other targets, such as the client's own duplicate
address detection, get no answer, as they must not.
"""
