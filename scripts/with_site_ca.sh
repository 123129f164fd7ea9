#!/usr/bin/env bash
# Runs a command with the site's CA certificates added to what pip, cargo and other HTTPS
# clients trust, for builds behind an HTTPS-intercepting proxy. The certificates come from
# the file named by LITS_SITE_CA (in the Docker build stages: the build secret `site-ca`);
# without one the command runs unchanged. The combined bundle is removed when it ends.
set -euo pipefail

site_ca=${LITS_SITE_CA:-/run/secrets/site-ca}
if [ -s "$site_ca" ]; then
  system=/etc/ssl/certs/ca-certificates.crt
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat "$system" "$site_ca" > "$bundle"
  export PIP_CERT=$bundle CARGO_HTTP_CAINFO=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle
fi
"$@"
