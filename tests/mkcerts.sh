#!/bin/sh
# tests/mkcerts.sh DIR [CN] - a throw-away CA and the five files umig's
# --tls-creds DIR reads (QEMU's names): ca-cert.pem, server-cert.pem,
# server-key.pem, client-cert.pem, client-key.pem.  The server
# certificate names CN (default localhost), localhost and 127.0.0.1; keys
# are ECDSA and mode 0600.  For tests and trying umig out; a real
# deployment takes its certificates from its own CA.  Needs certtool
# (Debian package gnutls-bin).
set -eu
dir=$1 cn=${2:-localhost}
mkdir -p "$dir"
cd "$dir"
umask 077
cat > ca.info <<EOT
cn = umig test CA
ca
cert_signing_key
expiration_days = 7
EOT
cat > server.info <<EOT
cn = $cn
dns_name = $cn
dns_name = localhost
ip_address = 127.0.0.1
tls_www_server
signing_key
encryption_key
expiration_days = 7
EOT
cat > client.info <<EOT
cn = umig source
tls_www_client
signing_key
encryption_key
expiration_days = 7
EOT
q=--no-text
certtool $q --generate-privkey --key-type=ecdsa --outfile ca-key.pem 2>/dev/null
certtool $q --generate-self-signed --load-privkey ca-key.pem --template ca.info \
	--outfile ca-cert.pem 2>/dev/null
for who in server client; do
	certtool $q --generate-privkey --key-type=ecdsa --outfile "$who-key.pem" 2>/dev/null
	certtool $q --generate-certificate --load-privkey "$who-key.pem" \
		--load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
		--template "$who.info" --outfile "$who-cert.pem" 2>/dev/null
done
chmod 600 ./*-key.pem
chmod 644 ./*-cert.pem
rm -f ca.info server.info client.info
