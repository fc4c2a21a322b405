#!/usr/bin/env bash
# Makes THROWAWAY certificates and tokens for the docker-compose stack, with openssl only:
#
#   deploy/make-secrets.sh [OUT_DIR]        (default deploy/generated; run once before
#                                            docker-compose up; again to replace them all)
#
# OUT_DIR/
#   ca.pem, ca-key.pem           a CA for this stack only (30 days)
#   pasgateway.pem, -key.pem     the gateway's server certificate (MLLP over TLS and HTTPS
#                                FHIR): DNS pasgateway and localhost, IP 127.0.0.1
#   engine.pem, -key.pem         a client certificate for an integration engine, CN
#                                engine.dnarisk.local (named in deploy/pasgateway/senders.json)
#   metrics_token                bearer token of every operations endpoint (Prometheus sends it;
#                                a browser sends it as the password of Basic authentication)
#   authserver-key.pem           signing key of a stand-in OAuth2 authorisation server
#   fhir_jwks.json               its public key as a JWKS, which the gateway trusts
#   fhir_access_token            an access token it signed: RS256, iss https://auth.dnarisk.local,
#                                aud https://localhost:8443/fhir, scope system/Appointment.write,
#                                client_id compose-demo-engine, valid 30 days
#
# Everything here is for a laptop: the files the containers read are made world-readable
# (the images run as an unprivileged user) and the CA and signing keys sit beside them. A
# trust issues certificates from its own PKI and tokens from its own authorisation server;
# see docs/security.md.
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")" && pwd)/generated}"
days=30
issuer="https://auth.dnarisk.local"
audience="https://localhost:8443/fhir"
mkdir -p "$out"
cd "$out"
command -v openssl >/dev/null || { echo "make-secrets.sh: openssl is required" >&2; exit 1; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# hex2bin: hex digits on stdin to bytes on stdout, without xxd.
hex2bin() { local hex; hex=$(tr -d ' \n'); printf "$(sed 's/../\\x&/g' <<<"$hex")"; }
ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ec_key ca-key.pem
openssl req -x509 -new -key ca-key.pem -out ca.pem -days "$days" -subj "/CN=dnarisk compose throwaway CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# issue NAME CN SAN EXTENDED_KEY_USAGE
issue() {
	ec_key "$1-key.pem"
	openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
	openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$1.pem" -days "$days" \
		-extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=%s\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$3" "$4") 2>/dev/null
	rm -f "$1.csr"
}
issue pasgateway pasgateway "DNS:pasgateway,DNS:localhost,IP:127.0.0.1" serverAuth
issue engine engine.dnarisk.local "DNS:engine.dnarisk.local" clientAuth
rm -f ca.srl

openssl rand -hex 32 >metrics_token

openssl genrsa -out authserver-key.pem 2048 2>/dev/null
n=$(openssl rsa -in authserver-key.pem -noout -modulus | cut -d= -f2 | hex2bin | b64url)
printf '{"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":"compose-1","n":"%s","e":"AQAB"}]}\n' "$n" >fhir_jwks.json

now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"compose-1"}' | b64url)
payload=$(printf '{"iss":"%s","aud":"%s","sub":"compose-demo-engine","client_id":"compose-demo-engine","scope":"system/Appointment.write","iat":%d,"exp":%d}' \
	"$issuer" "$audience" "$now" $((now + days * 86400)) | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign authserver-key.pem -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig" >fhir_access_token

chmod 600 ca-key.pem authserver-key.pem
chmod 644 ca.pem pasgateway.pem pasgateway-key.pem engine.pem engine-key.pem metrics_token fhir_jwks.json fhir_access_token
echo "make-secrets.sh: throwaway certificates and tokens in $out (valid $days days)" >&2
