#!/usr/bin/env bash
# Builds the test suite's lwIP PPP peer (tests/lwip/lwip_ppp_peer.c) from Debian's `lwip` source
# package, cached outside the repository in /var/cache/vpnd-tests/lwip-ppp-<hash of tests/lwip>.
#   tests/lwip/build.sh          build if missing (root; fetches the source package once)
#   tests/lwip/build.sh --path   print where the program is (or would be); builds nothing
# The source package comes through apt: when no deb-src entry has it, one is added for the archive
# the machine already uses (its release's main component).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${VPND_TEST_CACHE:-/var/cache/vpnd-tests}
hash=$(cd "$here" && find . -type f \( -name '*.c' -o -name '*.h' -o -name build.sh \) | LC_ALL=C sort \
       | xargs sha256sum | sha256sum | cut -c1-16)
out="$cache_root/lwip-ppp-$hash"
program="$out/lwip-ppp-peer"
if [ "${1:-}" = --path ]; then
  echo "$program"
  exit 0
fi
[ -x "$program" ] && exit 0

src_cache="$cache_root/lwip-source"
if ! ls "$src_cache"/lwip_*.dsc >/dev/null 2>&1; then
  if ! apt-cache showsrc lwip 2>/dev/null | grep -q '^Package: lwip'; then
    # Sources from the same archive the machine already installs its packages from.
    . /etc/os-release
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' \
             | awk -v suite="$VERSION_CODENAME" '$2 == suite && $3 == "main" { print $1; exit }')
    if [ -z "$mirror" ]; then
      echo "lwip: no apt source for $VERSION_CODENAME main to take the source package from" >&2
      exit 1
    fi
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
      "$mirror" "$VERSION_CODENAME" /usr/share/keyrings/debian-archive-keyring.gpg \
      >/etc/apt/sources.list.d/vpnd-tests-src.sources
    apt-get update -qq
  fi
  mkdir -p "$src_cache.tmp" && chmod 777 "$src_cache.tmp"  # apt downloads as _apt
  (cd "$src_cache.tmp" && apt-get source --download-only -qq lwip) >&2
  rm -rf "$src_cache" && mv "$src_cache.tmp" "$src_cache"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# --no-check: apt already checked the files against the signed Sources index.
dpkg-source --no-check -x "$src_cache"/lwip_*.dsc "$work/lwip" >/dev/null
lwip="$work/lwip/src"
# What the tests rely on: LCP, PAP, CHAP-MD5, MS-CHAP (v1 and v2), MPPE, IPCP, IPV6CP, async HDLC.
for part in lcp upap chap-md5 chap_ms mppe ccp ipcp ipv6cp pppos; do
  [ -f "$lwip/netif/ppp/$part.c" ] || { echo "lwip: the source package has no netif/ppp/$part.c" >&2; exit 1; }
done
# Everything of lwIP's core, IPv4, IPv6 and PPP (with its bundled crypto); what lwipopts.h turns
# off compiles to nothing.
sources=$(ls "$lwip"/core/*.c "$lwip"/core/ipv4/*.c "$lwip"/core/ipv6/*.c "$lwip"/netif/ppp/*.c \
             "$lwip"/netif/ppp/polarssl/*.c)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
# -w: lwIP's own sources are not ours to lint; our program is built with warnings on, separately.
for file in $sources; do
  gcc -c -O2 -w -I"$here" -I"$lwip/include" "$file" -o "$out.tmp/$(basename "$(dirname "$file")")-$(basename "$file" .c).o"
done
gcc -O2 -Wall -Wextra -Werror -I"$here" -I"$lwip/include" "$here/lwip_ppp_peer.c" "$out.tmp"/*.o \
    -o "$out.tmp/lwip-ppp-peer"
rm -f "$out.tmp"/*.o
ls "$src_cache"/lwip_*.dsc | xargs -n1 basename >"$out.tmp/SOURCE"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "lwip: built $program from $(cat "$out/SOURCE")" >&2
