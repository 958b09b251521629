"""Example configurations written from the facts in docs/vyos-sstp-config.md."""

# The VyOS documentation's SSTP server example (current syntax).
VYOS_DOCS_EXAMPLE = """
set vpn sstp authentication local-users username test password 'test'
set vpn sstp authentication mode 'local'
set vpn sstp client-ip-pool SSTP-POOL range '10.0.0.2-10.0.0.100'
set vpn sstp default-pool 'SSTP-POOL'
set vpn sstp gateway-address '10.0.0.1'
set vpn sstp ssl ca-certificate 'ca'
set vpn sstp ssl certificate 'server'
"""

# The same documentation before the named pools (VyOS schema 4 and 5): old syntax.
VYOS_DOCS_OLD_EXAMPLE = """
set vpn sstp authentication local-users username test password 'test'
set vpn sstp authentication mode 'local'
set vpn sstp client-ip-pool subnet '192.168.170.0/24'
set vpn sstp client-ipv6-pool prefix '2001:db8:8002::/48' mask '64'
set vpn sstp client-ipv6-pool delegate '2001:db8:8003::/48' delegation-prefix '56'
set vpn sstp gateway-address '192.168.170.1'
set vpn sstp ppp-options ipv6 'allow'
set vpn sstp ssl ca-certificate 'ca'
set vpn sstp ssl certificate 'server'
"""

# What the old example becomes after migration, in `show | commands` order.
VYOS_DOCS_OLD_MIGRATED = [
    "set vpn sstp authentication local-users username test password 'test'",
    "set vpn sstp authentication mode 'local'",
    "set vpn sstp client-ip-pool default-range-pool range '192.168.170.0/24'",
    "set vpn sstp client-ipv6-pool ipv6-pool delegate 2001:db8:8003::/48 delegation-prefix '56'",
    "set vpn sstp client-ipv6-pool ipv6-pool prefix 2001:db8:8002::/48 mask '64'",
    "set vpn sstp default-ipv6-pool 'ipv6-pool'",
    "set vpn sstp default-pool 'default-range-pool'",
    "set vpn sstp gateway-address '192.168.170.1'",
    "set vpn sstp ppp-options ipv6 'allow'",
    "set vpn sstp ssl ca-certificate 'ca'",
    "set vpn sstp ssl certificate 'server'",
]

# Smoketest-style: local users with every option, two pools chained, DNS/WINS, PPP options.
SMOKETEST_LOCAL = """
set vpn sstp authentication local-users username old disable
set vpn sstp authentication local-users username old password 'gone'
set vpn sstp authentication local-users username vyos password 'vyos'
set vpn sstp authentication local-users username vyos rate-limit download '10000'
set vpn sstp authentication local-users username vyos rate-limit upload '5000'
set vpn sstp authentication local-users username vyos static-ip '192.0.2.10'
set vpn sstp authentication mode 'local'
set vpn sstp authentication protocols 'mschap-v2'
set vpn sstp authentication protocols 'chap'
set vpn sstp client-ip-pool FIRST next-pool 'SECOND'
set vpn sstp client-ip-pool FIRST range '192.0.2.0/25'
set vpn sstp client-ip-pool SECOND range '192.0.2.128-192.0.2.200'
set vpn sstp default-pool 'FIRST'
set vpn sstp description 'office access'
set vpn sstp gateway-address '192.0.2.254'
set vpn sstp host-name 'vpn.example.com'
set vpn sstp limits burst '20'
set vpn sstp limits connection-limit '10/sec'
set vpn sstp limits timeout '60'
set vpn sstp log level '4'
set vpn sstp max-concurrent-sessions '100'
set vpn sstp mtu '1400'
set vpn sstp name-server '192.0.2.1'
set vpn sstp name-server '192.0.2.2'
set vpn sstp name-server '2001:db8::1'
set vpn sstp port '8443'
set vpn sstp ppp-options disable-ccp
set vpn sstp ppp-options interface-cache '100'
set vpn sstp ppp-options ipv4 'require'
set vpn sstp ppp-options ipv6 'allow'
set vpn sstp ppp-options ipv6-accept-peer-interface-id
set vpn sstp ppp-options ipv6-interface-id 'random'
set vpn sstp ppp-options ipv6-peer-interface-id 'calling-sid'
set vpn sstp ppp-options lcp-echo-failure '5'
set vpn sstp ppp-options lcp-echo-interval '20'
set vpn sstp ppp-options lcp-echo-timeout '120'
set vpn sstp ppp-options min-mtu '1280'
set vpn sstp ppp-options mppe 'deny'
set vpn sstp ppp-options mru '1400'
set vpn sstp ssl ca-cert-file '/etc/vpnd/ca.pem'
set vpn sstp ssl cert-file '/etc/vpnd/server.pem'
set vpn sstp ssl chain-file '/etc/vpnd/chain.pem'
set vpn sstp ssl ciphers 'ECDHE+AESGCM:!aNULL'
set vpn sstp ssl key-file '/etc/vpnd/server.key'
set vpn sstp ssl tls-version-min '1.3'
set vpn sstp wins-server '192.0.2.3'
"""

# Smoketest-style: RADIUS with every option.
SMOKETEST_RADIUS = """
set vpn sstp authentication mode 'radius'
set vpn sstp authentication radius accounting-interim-interval '300'
set vpn sstp authentication radius acct-interim-jitter '10'
set vpn sstp authentication radius acct-timeout '0'
set vpn sstp authentication radius dynamic-author key 'dae-secret'
set vpn sstp authentication radius dynamic-author port '3799'
set vpn sstp authentication radius dynamic-author server '192.0.2.1'
set vpn sstp authentication radius max-try '5'
set vpn sstp authentication radius nas-identifier 'vpnd-test'
set vpn sstp authentication radius nas-ip-address '192.0.2.1'
set vpn sstp authentication radius rate-limit attribute 'Mikrotik-Rate-Limit'
set vpn sstp authentication radius rate-limit enable
set vpn sstp authentication radius rate-limit multiplier '0.5'
set vpn sstp authentication radius rate-limit vendor 'Mikrotik'
set vpn sstp authentication radius server 192.0.2.10 acct-port '1814'
set vpn sstp authentication radius server 192.0.2.10 fail-time '10'
set vpn sstp authentication radius server 192.0.2.10 key 'secret1'
set vpn sstp authentication radius server 192.0.2.10 port '1815'
set vpn sstp authentication radius server 192.0.2.10 priority '10'
set vpn sstp authentication radius server 192.0.2.11 backup
set vpn sstp authentication radius server 192.0.2.11 disable-accounting
set vpn sstp authentication radius server 192.0.2.11 key 'secret2'
set vpn sstp authentication radius server 192.0.2.12 disable
set vpn sstp authentication radius server 192.0.2.12 key 'secret3'
set vpn sstp authentication radius source-address '192.0.2.1'
set vpn sstp authentication radius timeout '10'
set vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40 delegation-prefix '56'
set vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48 mask '64'
set vpn sstp default-ipv6-pool 'V6'
set vpn sstp ppp-options ipv6 'require'
set vpn sstp ssl ca-certificate 'ca'
set vpn sstp ssl certificate 'server'
set vpn sstp ssl intermediate-certificate 'intermediate'
"""

# The client side, VyOS nodes plus RouterOS's.
SSTPC = """
set interfaces sstpc sstpc0 authentication password 'client-pass'
set interfaces sstpc sstpc0 authentication username 'client'
set interfaces sstpc sstpc0 default-route-distance '100'
set interfaces sstpc sstpc0 description 'uplink'
set interfaces sstpc sstpc0 mtu '1400'
set interfaces sstpc sstpc0 no-peer-dns
set interfaces sstpc sstpc0 port '8443'
set interfaces sstpc sstpc0 server 'vpn.example.com'
set interfaces sstpc sstpc0 ssl ca-certificate 'ca'
set interfaces sstpc sstpc2 add-sni 'no'
set interfaces sstpc sstpc2 authentication password 'p2'
set interfaces sstpc sstpc2 authentication username 'u2'
set interfaces sstpc sstpc2 disable
set interfaces sstpc sstpc2 http-proxy address 'proxy.example.com'
set interfaces sstpc sstpc2 http-proxy port '3128'
set interfaces sstpc sstpc2 keepalive-timeout '30'
set interfaces sstpc sstpc2 no-default-route
set interfaces sstpc sstpc2 server '192.0.2.50'
set interfaces sstpc sstpc2 tls-version 'only-1.3'
set interfaces sstpc sstpc2 verify-server-address-from-certificate 'no'
set interfaces sstpc sstpc2 verify-server-certificate 'no'
set interfaces sstpc sstpc10 server '192.0.2.51'
"""
