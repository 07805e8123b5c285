#!/usr/bin/env bash
# Make a private CA and certificates signed by it, with openssl, for a TLS deployment or a
# benchmark. Existing files are kept, so a second run adds only what is missing.
#
#   scripts/make-certs.sh DIR NAME[,ALTNAME...] ...
#
# DIR/ca.pem + DIR/ca.key: the CA (10 years). For each NAME: DIR/NAME.pem + DIR/NAME.key,
# valid for 825 days for NAME, every ALTNAME, localhost and 127.0.0.1, usable by servers
# and clients. Keys are EC P-256 and readable by their owner only (0600), except that the
# directory is made readable to the containers' service users by the caller if needed.
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 DIR NAME[,ALTNAME...] ..." >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || { echo "make-certs: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
dir=$1
shift
mkdir -p "$dir"
umask 077
if [[ ! -f $dir/ca.pem ]]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=sluice local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
fi
for spec in "$@"; do
    IFS=, read -r -a names <<<"$spec"
    name=${names[0]}
    [[ -f $dir/$name.pem ]] && continue
    san="DNS:localhost,IP:127.0.0.1"
    for n in "${names[@]}"; do san="DNS:$n,$san"; done
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/$name.pem" -days 825 \
        -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$san") \
        2>/dev/null
    rm -f "$dir/$name.csr"
done
